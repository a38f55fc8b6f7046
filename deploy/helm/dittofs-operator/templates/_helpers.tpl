{{/* Names, labels and checks shared by every template. */}}

{{- define "dittofs-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Namespaced objects' name: the release's full name (at most 63 characters). */}}
{{- define "dittofs-operator.fullname" -}}
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

{{/* Cluster-scoped objects' name: the full name plus the release namespace, so that two
releases of the same name in different namespaces (e.g. two namespace-scoped installs) do not
fight over one ClusterRole. */}}
{{- define "dittofs-operator.clusterName" -}}
{{- printf "%s-%s" (include "dittofs-operator.fullname" .) .Release.Namespace }}
{{- end }}

{{/* The leader-election Lease: one per release, in the release namespace. */}}
{{- define "dittofs-operator.leaseName" -}}
{{- include "dittofs-operator.fullname" . }}
{{- end }}

{{- define "dittofs-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dittofs-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dittofs-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dittofs-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dittofs-operator.labels" -}}
{{ include "dittofs-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: dittofs
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* repository:tag, plus @digest when one is given (the runtime then pulls by digest). */}}
{{- define "dittofs-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- with .Values.image.digest }}@{{ . }}{{ end }}
{{- end }}

{{/* A number for an environment variable: 15 stays "15", 0.5 stays "0.5". */}}
{{- define "dittofs-operator.number" -}}
{{- $value := float64 . }}
{{- if eq $value (floor $value) }}{{ int64 $value }}{{ else }}{{ $value }}{{ end }}
{{- end }}

{{/* Checks a schema cannot express; rendered by the Deployment so every install runs them. */}}
{{- define "dittofs-operator.validate" -}}
{{- $election := .Values.leaderElection }}
{{- if and (gt (int .Values.replicaCount) 1) (not $election.enabled) }}
{{- fail "replicaCount > 1 requires leaderElection.enabled: without it every replica would reconcile the same DittoServers at once" }}
{{- end }}
{{- if $election.enabled }}
{{- $lease := float64 $election.leaseDuration }}
{{- $renew := float64 $election.renewDeadline }}
{{- $retry := mulf (float64 $election.retryPeriod) 1.2 }}
{{- if not (and (gt $lease $renew) (gt $renew $retry)) }}
{{- fail (printf "leaderElection needs leaseDuration > renewDeadline > 1.2 x retryPeriod; got %v > %v > 1.2 x %v" $election.leaseDuration $election.renewDeadline $election.retryPeriod) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled requires metrics.service.enabled" }}
{{- end }}
{{- $sharedPort := eq (int .Values.metrics.port) (int .Values.healthPort) }}
{{- $bind := .Values.metrics.bindAddress }}
{{- if and $bind $sharedPort }}
{{- fail "metrics.bindAddress needs a metrics.port other than healthPort: a shared port is one server on one address, and the probes must stay reachable" }}
{{- end }}
{{- $loopback := or (hasPrefix "127." $bind) (eq $bind "::1") }}
{{- if and $loopback .Values.metrics.serviceMonitor.enabled }}
{{- fail (printf "metrics.serviceMonitor.enabled cannot scrape metrics.bindAddress %s: a loopback address is reachable from inside the pod only (disable the ServiceMonitor, or unset metrics.bindAddress and let networkPolicy.metricsFrom admit Prometheus)" $bind) }}
{{- end }}
{{- if .Values.networkPolicy.enabled }}
{{- if $sharedPort }}
{{- fail "networkPolicy.enabled needs a metrics.port other than healthPort: the probes' port is open to all, so /metrics on the same port could not be restricted (or set networkPolicy.enabled=false)" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.networkPolicy.metricsFrom) }}
{{- fail "metrics.serviceMonitor.enabled with networkPolicy.enabled needs networkPolicy.metricsFrom: list the peers Prometheus scrapes from (e.g. a namespaceSelector on its namespace), or the NetworkPolicy drops every scrape" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The variables the chart sets; extraEnv is checked against their names. */}}
{{- define "dittofs-operator.env" -}}
{{- $election := .Values.leaderElection -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: DITTOFS_CONTROLLER_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: DITTOFS_CONTROLLER_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: DITTOFS_CONTROLLER_HEALTH_PORT
  value: {{ include "dittofs-operator.number" .Values.healthPort | quote }}
- name: DITTOFS_CONTROLLER_METRICS_PORT
  value: {{ include "dittofs-operator.number" .Values.metrics.port | quote }}
{{- with .Values.metrics.bindAddress }}
- name: DITTOFS_CONTROLLER_METRICS_BIND_ADDRESS
  value: {{ . | quote }}
{{- end }}
- name: DITTOFS_CONTROLLER_WORKERS
  value: {{ include "dittofs-operator.number" .Values.workers | quote }}
- name: DITTOFS_CONTROLLER_RECONCILE_TIMEOUT
  value: {{ include "dittofs-operator.number" .Values.reconcileTimeout | quote }}
- name: DITTOFS_CONTROLLER_SHUTDOWN_GRACE
  value: {{ include "dittofs-operator.number" .Values.shutdownGrace | quote }}
{{- with .Values.watchNamespaces }}
- name: DITTOFS_CONTROLLER_NAMESPACES
  value: {{ join "," . | quote }}
{{- end }}
- name: DITTOFS_CONTROLLER_LEADER_ELECT
  value: {{ ternary "true" "false" (eq $election.enabled true) | quote }}
{{- if $election.enabled }}
# The Lease lives where the leader-election Role grants access to it.
- name: DITTOFS_CONTROLLER_LEADER_ELECT_NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: DITTOFS_CONTROLLER_LEADER_ELECT_LEASE_NAME
  value: {{ include "dittofs-operator.leaseName" . | quote }}
- name: DITTOFS_CONTROLLER_LEADER_ELECT_LEASE_DURATION
  value: {{ include "dittofs-operator.number" $election.leaseDuration | quote }}
- name: DITTOFS_CONTROLLER_LEADER_ELECT_RENEW_DEADLINE
  value: {{ include "dittofs-operator.number" $election.renewDeadline | quote }}
- name: DITTOFS_CONTROLLER_LEADER_ELECT_RETRY_PERIOD
  value: {{ include "dittofs-operator.number" $election.retryPeriod | quote }}
{{- end }}
{{- with .Values.otlpEndpoint }}
- name: DITTOFS_CONTROLLER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}
