{{/* The chart name, or nameOverride. */}}
{{- define "kube-failover.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else the release name, followed by the
chart name unless the release name already contains it.
*/}}
{{- define "kube-failover.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kube-failover.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the controller pods; never change them after an install. */}}
{{- define "kube-failover.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-failover.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kube-failover.labels" -}}
helm.sh/chart: {{ include "kube-failover.chart" . }}
{{ include "kube-failover.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: kube-failover
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kube-failover.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kube-failover.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kube-failover.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Refuses combinations that would be unsafe rather than merely wrong. */}}
{{- define "kube-failover.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 requires leaderElection.enabled: two replicas without a leader would both act on every instance" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled requires metrics.service.enabled" }}
{{- end }}
{{- if and .Values.agent.enabled (lt (float64 .Values.agent.selfFenceSeconds) (divf (mulf 2 .Values.agent.renewMilliseconds) 1000)) }}
{{- fail "agent.selfFenceSeconds must be at least twice agent.renewMilliseconds: one late renewal would fence a healthy node" }}
{{- end }}
{{- end }}

{{/* A list of strings as CEL string literals, comma-separated: 'a', 'b'. */}}
{{- define "kube-failover.celStrings" -}}
{{- $quoted := list }}
{{- range . }}{{ $quoted = append $quoted (squote .) }}{{ end }}
{{- join ", " $quoted }}
{{- end }}

{{/* The RBAC rules on what concerns instances: in the ClusterRole, or in a Role of the
watched namespace. */}}
{{- define "kube-failover.namespacedRules" -}}
# The instances it reconciles; patch for its finalizer.
- apiGroups: ["kube-failover.io"]
  resources: ["failoverclusterinstances"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written with the resourceVersion it was decided from (update).
- apiGroups: ["kube-failover.io"]
  resources: ["failoverclusterinstances/status"]
  verbs: ["update"]
# Owner references with blockOwnerDeletion on the objects it creates for an instance
# (checked where the OwnerReferencesPermissionEnforcement admission plugin is on).
- apiGroups: ["kube-failover.io"]
  resources: ["failoverclusterinstances/finalizers"]
  verbs: ["update"]
# The workload pod: one per instance, created on the owner, deleted when it moves.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The network name's Service, applied server-side.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Claims made from an instance's claimTemplates (and deleted with it); users' claims are
# only read (the admission policy refuses deleting them).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The EndpointSlice of the network name, listing only the active pod.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}

{{/* Labels that select the node agent's pods (apart from the controller's). */}}
{{- define "kube-failover.agentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-failover.name" . }}-agent
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kube-failover.agentLabels" -}}
helm.sh/chart: {{ include "kube-failover.chart" . }}
{{ include "kube-failover.agentSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: kube-failover
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the witness's pod (apart from the controller's and the agent's). */}}
{{- define "kube-failover.witnessSelectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-failover.name" . }}-witness
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kube-failover.witnessLabels" -}}
helm.sh/chart: {{ include "kube-failover.chart" . }}
{{ include "kube-failover.witnessSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: witness
app.kubernetes.io/part-of: kube-failover
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
