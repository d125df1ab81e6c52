{{/* Name of the chart, overridable. */}}
{{- define "moviebook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the chart's objects: <release>-<name>, or the release name when it already contains the name. */}}
{{- define "moviebook.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "moviebook.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of the operator's Deployment, Service and RBAC objects. */}}
{{- define "moviebook.operatorName" -}}
{{- printf "%s-operator" (include "moviebook.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Recommended labels of every object of the chart. */}}
{{- define "moviebook.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: moviebook
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select the operator's pods (immutable: never add anything that changes). */}}
{{- define "moviebook.operatorSelector" -}}
app.kubernetes.io/name: moviebook-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* All labels of the operator's objects. */}}
{{- define "moviebook.operatorLabels" -}}
{{ include "moviebook.labels" . }}
{{ include "moviebook.operatorSelector" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The operator's ServiceAccount name. */}}
{{- define "moviebook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "moviebook.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator image: repository (default <imageRegistry>/moviebook-operator) with digest or tag (default appVersion). */}}
{{- define "moviebook.operatorImage" -}}
{{- $img := .Values.operator.image -}}
{{- $repo := default (printf "%s/moviebook-operator" (trimSuffix "/" .Values.imageRegistry)) $img.repository -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}
