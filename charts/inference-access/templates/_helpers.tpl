{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "inference-access.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, suffixed with the chart name unless it already contains it. */}}
{{- define "inference-access.fullname" -}}
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

{{/* Labels that select the operator's pods: stable across upgrades. */}}
{{- define "inference-access.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inference-access.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* Labels on every object. */}}
{{- define "inference-access.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "inference-access.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "inference-access.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "inference-access.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "inference-access.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: explicitly, or by default when replicaCount > 1. */}}
{{- define "inference-access.leaderElection" -}}
{{- if kindIs "bool" .Values.leaderElection.enabled }}
{{- .Values.leaderElection.enabled }}
{{- else }}
{{- gt (int .Values.replicaCount) 1 }}
{{- end }}
{{- end }}

{{/*
The rules of one of the RBAC files that hack/sync.sh copies from config/rbac/ into files/rbac/,
so the chart and kustomize grant exactly the same permissions.
*/}}
{{- define "inference-access.rbacRules" -}}
{{- $path := printf "files/rbac/%s" .file }}
{{- $role := .root.Files.Get $path | fromYaml }}
{{- if not $role.rules }}
{{- fail (printf "%s has no rules: run hack/sync.sh" $path) }}
{{- end }}
{{- toYaml $role.rules }}
{{- end }}

{{/*
The operator's own rules (config/rbac/role.yaml): the one list behind both its ClusterRole and,
with controller.watchNamespaces, its Role in each watched namespace.
*/}}
{{- define "inference-access.managerRules" -}}
{{- include "inference-access.rbacRules" (dict "root" . "file" "role.yaml") }}
{{- end }}

{{/* The aggregation labels (…/aggregate-to-…) of one of the files in files/rbac/. */}}
{{- define "inference-access.rbacAggregationLabels" -}}
{{- $role := .root.Files.Get (printf "files/rbac/%s" .file) | fromYaml }}
{{- $labels := dict }}
{{- range $key, $value := $role.metadata.labels }}
{{- if contains "/aggregate-to-" $key }}
{{- $_ := set $labels $key $value }}
{{- end }}
{{- end }}
{{- if not $labels }}
{{- fail (printf "files/rbac/%s has no aggregation labels: run hack/sync.sh" .file) }}
{{- end }}
{{- toYaml $labels }}
{{- end }}
