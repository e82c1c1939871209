//! The files of the state directory: kubeconfigs, and the controller's token and its renewal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use kube::Client;

use crate::controlplane::controller_token;

use super::*;

/// The admin kubeconfig of the control plane, with the playground's namespace as the
/// context's default.
pub(super) fn write_kubeconfig(from: &Path, to: &Path) -> Result<()> {
    let text = std::fs::read_to_string(from)?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text)?;
    for context in config
        .get_mut("contexts")
        .and_then(|c| c.as_sequence_mut())
        .context("the control plane's kubeconfig has no contexts")?
    {
        if let Some(ctx) = context.get_mut("context").and_then(|c| c.as_mapping_mut()) {
            ctx.insert("namespace".into(), NAMESPACE.into());
        }
    }
    write_private(to, &serde_yaml::to_string(&config)?)?;
    Ok(())
}

/// As the admin kubeconfig, but authenticated with the token in `token_file` (which the
/// client re-reads every minute): the controller's, for `--controller-bin`.
pub(super) fn write_kubeconfig_with_token_file(
    from: &Path,
    token_file: &Path,
    to: &Path,
) -> Result<()> {
    let text = std::fs::read_to_string(from)?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text)?;
    for user in config
        .get_mut("users")
        .and_then(|u| u.as_sequence_mut())
        .context("the control plane's kubeconfig has no users")?
    {
        if let Some(user) = user.get_mut("user").and_then(|u| u.as_mapping_mut()) {
            user.clear();
            user.insert("tokenFile".into(), token_file.display().to_string().into());
        }
    }
    write_private(to, &serde_yaml::to_string(&config)?)?;
    Ok(())
}

/// Writes a file only its owner may read: it holds a credential.
pub(super) fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

pub(super) async fn write_token(client: &Client, path: &Path) -> Result<()> {
    let token = controller_token(client, TOKEN_SECONDS as i64).await?;
    // Written whole, then renamed: the client never reads half a token.
    let tmp = path.with_extension("new");
    write_private(&tmp, &token)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub(super) async fn renew_token(client: Client, path: PathBuf) {
    loop {
        tokio::time::sleep(Duration::from_secs(TOKEN_SECONDS / 2)).await;
        if let Err(e) = write_token(&client, &path).await {
            eprintln!("renewing the controller's token failed: {e:#}");
        }
    }
}
