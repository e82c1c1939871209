// The dashboard's page. Each snapshot the server sends (server-sent events on /api/events,
// built from its watches of FailoverClusters and FailoverClusterInstances) is drawn as a map:
// each cluster with its members, each instance on its owner. Beside it: the moves in
// progress step by step, the steps as this page received them, and the recent moves. The
// slider goes back through every recorded step and draws where the instances were then.
'use strict';

(() => {
  const actions = document.body.dataset.actions === 'true';
  const tokenMeta = document.querySelector('meta[name="dashboard-token"]');
  const token = tokenMeta ? tokenMeta.content : '';
  const $ = (id) => document.getElementById(id);
  const LOG_MAX = 200;

  let view = null; // the last snapshot
  let receivedAt = 0; // when it came (heartbeat ages are as of then)
  let lastSeq = 0;
  let scrubbed = null; // null: live; else the step shown, as stepId() names it
  const seen = new Set(); // every step ever received, as stepId() names it
  let primed = false; // the first snapshot's steps are the past, not news

  const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
  const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c]);
  const stepId = (s) => s.moveId + '/' + s.step;
  const seconds = (ms) => '+' + (ms / 1000).toFixed(3) + ' s';

  // As `kubectl failover status` says ages.
  function humanAge(ms) {
    ms = Math.max(0, Math.floor(ms));
    if (ms < 1000) return ms + 'ms';
    if (ms < 120000) return Math.floor(ms / 1000) + 's';
    if (ms < 7200000) return Math.floor(ms / 60000) + 'm';
    if (ms < 172800000) return Math.floor(ms / 3600000) + 'h';
    return Math.floor(ms / 86400000) + 'd';
  }

  function heartbeatText(ageMs) {
    if (ageMs === null || ageMs === undefined || ageMs === '') return 'no heartbeat seen';
    return 'heartbeat ' + humanAge(Number(ageMs) + (Date.now() - receivedAt)) + ' ago';
  }

  function route(m) {
    const from = m.from ? ' from ' + m.from : '';
    const to = m.to ? (m.from ? ' to ' : ' on ') + m.to : '';
    return m.kind + from + to + ' (' + m.reason + ')';
  }

  // The step shown: null when live, else its index in view.steps.
  function position() {
    if (scrubbed === null || !view) return null;
    const i = view.steps.findIndex((s) => stepId(s) === scrubbed);
    return i < 0 ? null : i;
  }

  // Where each instance is drawn, and in which phase: now, or once step `pos` was done.
  function placements(pos) {
    const out = new Map();
    for (const i of view.instances) {
      out.set(i.key, pos === null
        ? { node: i.owner ?? null, phase: i.phase, past: false }
        : { node: null, phase: 'NoRecord', past: true });
    }
    if (pos !== null) {
      for (const s of view.steps.slice(0, pos + 1)) {
        if (out.has(s.instance)) {
          out.set(s.instance, { node: s.state.node ?? null, phase: s.state.phase, past: true });
        }
      }
    }
    return out;
  }

  const PAST_PHASES = { Moving: 'Moving', Online: 'Online', Ended: 'move ended', NoRecord: 'no record yet' };

  function instanceChip(i, at) {
    const phase = at.past ? at.phase : i.phase;
    const details = [];
    if (i.virtualIps.length) details.push(['VIP', i.virtualIps.join(', ')]);
    if (!at.past) {
      details.push(['endpoint', i.endpoint ?? '-']);
      details.push(['failovers', i.failovers]);
    }
    const moving = !at.past && i.moving ? view.moves.find((m) => m.id === i.moving) : null;
    const arrow = moving ? ` <span class="arrow">→ ${esc(moving.to ?? '?')}</span>` : '';
    const wait = !at.past && i.waitingFor
      ? `<div class="wait">${esc(i.reason ? i.reason + ': ' : '')}${esc(i.waitingFor)}</div>`
      : '';
    const canMove = actions && !at.past && !i.moving && (i.phase === 'Online' || i.phase === 'Degraded');
    const button = canMove
      ? `<div class="actions"><button type="button" data-act="move" data-key="${esc(i.key)}">Move…</button></div>`
      : '';
    return `<div class="instance phase-${esc(phase)}${at.past ? ' past' : ''}" data-key="${esc(i.key)}" data-phase="${esc(phase)}">`
      + `<div class="iname"><span class="name">${esc(i.name)}</span> <span class="ns">${esc(i.namespace)}</span></div>`
      + `<div class="iphase">${esc(at.past ? PAST_PHASES[phase] ?? phase : phase)}${arrow}</div>`
      + `<div class="details">${details.map(([k, v]) => `<span class="kv"><b>${esc(k)}</b> ${esc(v)}</span>`).join('')}</div>`
      + wait + button + '</div>';
  }

  function memberCard(m, here, where) {
    const why = [
      m.reason,
      m.nonVoting ? 'does not vote' : null,
      m.quarantinedUntil ? 'quarantined until ' + m.quarantinedUntil : null,
    ].filter(Boolean).join('; ');
    let buttons = '';
    if (actions && m.state === 'Paused') {
      buttons = `<button type="button" data-act="resume" data-node="${esc(m.name)}">Resume</button>`
        + `<button type="button" data-act="failback" data-node="${esc(m.name)}">Resume + failback</button>`;
    } else if (actions && m.state === 'Up') {
      buttons = `<button type="button" data-act="drain" data-node="${esc(m.name)}">Drain</button>`;
    }
    const chips = here.map((i) => instanceChip(i, where.get(i.key))).join('');
    return `<article class="member state-${esc(m.state)}" data-node="${esc(m.name)}" data-state="${esc(m.state)}">`
      + '<header>'
      + `<span class="node-name">${esc(m.name)}</span>`
      + (m.site ? `<span class="site">${esc(m.site)}</span>` : '')
      + `<span class="badge">${esc(m.state)}</span>`
      + '</header>'
      + `<div class="hb" data-age-ms="${esc(m.heartbeatAgeMs)}">${esc(heartbeatText(m.heartbeatAgeMs))}</div>`
      + (why ? `<div class="why">${esc(why)}</div>` : '')
      + `<div class="instances">${chips || '<span class="none">no instance</span>'}</div>`
      + (buttons ? `<div class="actions">${buttons}</div>` : '')
      + '</article>';
  }

  function renderClusters(pos) {
    const where = placements(pos);
    const names = new Set(view.clusters.map((c) => c.name));
    let html = '';
    for (const c of view.clusters) {
      const members = new Set(c.members.map((m) => m.name));
      const mine = view.instances.filter((i) => i.cluster === c.name);
      html += `<section class="cluster" data-cluster="${esc(c.name)}">`
        + `<h2>Cluster ${esc(c.name)}</h2>`
        + `<p class="quorum ${c.quorumLost ? 'lost' : 'ok'}" data-margin="${esc(c.quorumMargin)}">Quorum: ${esc(c.quorumText)}</p>`
        + '<div class="members">'
        + c.members.map((m) => memberCard(m, mine.filter((i) => where.get(i.key).node === m.name), where)).join('')
        + '</div>';
      const elsewhere = mine.filter((i) => !members.has(where.get(i.key).node));
      if (elsewhere.length) {
        html += '<div class="unplaced"><h3>On no member</h3><div class="instances">'
          + elsewhere.map((i) => instanceChip(i, where.get(i.key))).join('') + '</div></div>';
      }
      html += '</section>';
    }
    const orphans = view.instances.filter((i) => !names.has(i.cluster));
    if (orphans.length) {
      html += '<section class="cluster"><h2>Instances of clusters not found</h2><div class="instances">'
        + orphans.map((i) => instanceChip(i, where.get(i.key))).join('') + '</div></section>';
    }
    $('clusters').innerHTML = html || '<p class="empty">No FailoverClusters.</p>';
  }

  // The moves in progress now, or at step `pos`, with the steps done by then.
  function renderMoving(pos) {
    const shown = [];
    for (const m of view.moves) {
      const done = pos === null ? m.steps : m.steps.filter((s) => s.index <= pos);
      if (!done.length) continue;
      const going = pos === null
        ? m.inProgress
        : view.steps[done[done.length - 1].index].state.phase === 'Moving';
      if (going) shown.push([m, done]);
    }
    $('moving').innerHTML = shown.map(([m, done]) => {
      const i = view.instances.find((x) => x.key === m.instance);
      const waiting = pos === null && i && i.waitingFor ? i.waitingFor : '';
      return `<article class="move in-progress" data-move="${esc(m.id)}" data-instance="${esc(m.instance)}">`
        + `<h3><span class="ikey">${esc(m.instance)}</span> ${esc(route(m))}</h3>`
        + '<ol class="steps">'
        + done.map((s) => `<li data-step="${esc(s.step)}"><span class="since">${esc(seconds(s.sinceMs))}</span> ${esc(s.label)}</li>`).join('')
        + `<li class="pending">${esc(waiting || (pos === null ? 'next step…' : 'next step not yet done'))}</li>`
        + '</ol></article>';
    }).join('') || '<p class="empty">None.</p>';
  }

  function renderTimeline(pos) {
    const html = view.moves.slice().reverse().map((m) => {
      const steps = m.steps.map((s) => {
        const when = pos === null ? '' : s.index === pos ? ' current' : s.index > pos ? ' future' : ' done';
        return `<li><button type="button" class="step${when}" data-index="${s.index}" data-step="${esc(s.step)}">`
          + `<span class="t">${esc(s.time)}</span> <span class="since">${esc(seconds(s.sinceMs))}</span> ${esc(s.label)}</button></li>`;
      }).join('');
      return `<article class="move${m.inProgress ? ' in-progress' : ''}" data-move="${esc(m.id)}" data-instance="${esc(m.instance)}" data-kind="${esc(m.kind)}">`
        + `<h3><span class="ikey">${esc(m.instance)}</span> ${esc(m.heading)}</h3>`
        + `<ol class="steps">${steps}</ol></article>`;
    }).join('');
    $('moves').innerHTML = html || '<p class="empty">No moves yet.</p>';
  }

  function renderScrubber(pos) {
    const slider = $('scrub');
    const n = view.steps.length;
    slider.max = String(n);
    slider.value = String(pos === null ? n : pos);
    slider.disabled = n === 0;
    const label = $('scrub-label');
    if (pos === null) {
      label.textContent = n ? `live (${n} steps recorded)` : 'live';
      label.dataset.live = 'true';
    } else {
      const s = view.steps[pos];
      label.textContent = `${s.time}: ${s.instance} ${s.label} (step ${pos + 1} of ${n})`;
      label.dataset.live = 'false';
    }
    $('live').hidden = pos === null;
    $('past-note').hidden = pos === null;
    document.body.classList.toggle('past', pos !== null);
  }

  function render() {
    if (!view) return;
    $('scope').textContent = view.scope ? 'instances of ' + view.scope : '';
    const error = $('error');
    error.hidden = !view.error;
    error.textContent = view.error ?? '';
    if (!view.loaded) {
      $('clusters').innerHTML = '<p class="empty">Loading…</p>';
      return;
    }
    const pos = position();
    if (pos === null) scrubbed = null;
    renderScrubber(pos);
    renderClusters(pos);
    renderMoving(pos);
    renderTimeline(pos);
  }

  // Steps not seen before go to the log, newest first, with the snapshot that brought them.
  function logNews(v) {
    const fresh = [];
    for (const s of v.steps) {
      const id = stepId(s);
      if (seen.has(id)) continue;
      seen.add(id);
      if (primed) fresh.push(s);
    }
    primed = true;
    const log = $('live-log');
    for (const s of fresh) {
      const li = document.createElement('li');
      li.dataset.instance = s.instance;
      li.dataset.step = s.step;
      li.dataset.move = s.moveId;
      li.dataset.seq = String(v.seq);
      li.innerHTML = `<span class="t">${esc(s.time)}</span> <b>${esc(s.instance)}</b> ${esc(s.label)}`
        + `<div class="muted">${esc(route(v.moves.find((m) => m.id === s.moveId) ?? { kind: '', reason: '' }))}</div>`;
      log.prepend(li);
    }
    while (log.children.length > LOG_MAX) log.lastElementChild.remove();
  }

  function setConn(state, text) {
    const conn = $('conn');
    conn.dataset.state = state;
    conn.textContent = text;
  }

  function connect() {
    const events = new EventSource('/api/events');
    // A new connection may be to a restarted server, whose snapshots count from 1 again.
    events.onopen = () => { lastSeq = 0; setConn('live', 'live'); };
    events.onerror = () => setConn('reconnecting', 'reconnecting…');
    events.onmessage = (e) => {
      let v;
      try { v = JSON.parse(e.data); } catch { return; }
      if (v.seq <= lastSeq) return;
      lastSeq = v.seq;
      view = v;
      receivedAt = Date.now();
      if (v.loaded) logNews(v);
      render();
      document.body.dataset.seq = String(v.seq);
    };
  }

  // Actions, when the server allows them: a dialog says what will happen, then a POST.
  function ask(d) {
    const dialog = $('act-dialog');
    const target = $('act-target');
    const select = $('act-to');
    target.hidden = true;
    let title;
    let text;
    let send;
    if (d.act === 'move') {
      const i = view.instances.find((x) => x.key === d.key);
      if (!i) return;
      const c = view.clusters.find((x) => x.name === i.cluster);
      const targets = (c ? c.members : []).filter((m) => m.state === 'Up' && m.name !== i.owner);
      select.innerHTML = '<option value="">the next eligible owner</option>'
        + targets.map((m) => `<option value="${esc(m.name)}">${esc(m.name)}</option>`).join('');
      target.hidden = false;
      title = 'Move ' + i.key;
      text = `A planned move off ${i.owner ?? '-'}: its endpoint withdrawn, its pod stopped with `
        + 'its grace period and its volumes detached, then started on the target. Nothing is fenced.';
      send = () => post('/api/move', { namespace: i.namespace, instance: i.name, to: select.value || null });
    } else if (d.act === 'drain') {
      title = 'Drain ' + d.node;
      text = 'Cordon it and move every instance it hosts off, higher priority first, with planned moves.';
      send = () => post('/api/drain', { node: d.node });
    } else {
      const failback = d.act === 'failback';
      title = 'Resume ' + d.node;
      text = failback
        ? 'Make it eligible again, and move back what the drain moved off.'
        : 'Make it eligible again.';
      send = () => post('/api/resume', { node: d.node, failback });
    }
    $('act-title').textContent = title;
    $('act-text').textContent = text;
    dialog.returnValue = '';
    dialog.onclose = () => { if (dialog.returnValue === 'ok') send(); };
    dialog.showModal();
  }

  async function post(path, body) {
    try {
      const answer = await fetch(path, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Dashboard-Token': token },
        body: JSON.stringify(body),
      });
      const said = await answer.json().catch(() => ({}));
      toast(answer.ok ? said.message : said.error || answer.statusText, !answer.ok);
    } catch (e) {
      toast(String(e), true);
    }
  }

  function toast(message, bad) {
    const t = $('toast');
    t.textContent = message;
    t.classList.toggle('bad', Boolean(bad));
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 8000);
  }

  $('scrub').addEventListener('input', (e) => {
    if (!view) return;
    const n = Number(e.target.value);
    scrubbed = n >= view.steps.length ? null : stepId(view.steps[n]);
    render();
  });
  $('live').addEventListener('click', () => { scrubbed = null; render(); });
  document.addEventListener('click', (e) => {
    const step = e.target.closest('button.step');
    if (step && view) {
      const s = view.steps[Number(step.dataset.index)];
      if (s) { scrubbed = stepId(s); render(); }
      return;
    }
    const act = e.target.closest('button[data-act]');
    if (act && actions && view) ask(act.dataset);
  });
  setInterval(() => {
    for (const hb of document.querySelectorAll('.hb')) hb.textContent = heartbeatText(hb.dataset.ageMs);
  }, 1000);

  connect();
})();
