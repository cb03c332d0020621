{{/* The chart's name, or nameOverride. */}}
{{- define "connectycube-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name: the release's name when it already names the chart. */}}
{{- define "connectycube-exporter.fullname" -}}
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

{{/* The labels a selector uses: they never change after the first install. */}}
{{- define "connectycube-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "connectycube-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The recommended labels but the component, on every object. */}}
{{- define "connectycube-exporter.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "connectycube-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: connectycube-exporter
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels of the exporter's own objects. */}}
{{- define "connectycube-exporter.labels" -}}
{{ include "connectycube-exporter.commonLabels" . }}
app.kubernetes.io/component: exporter
{{- end }}

{{- define "connectycube-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "connectycube-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "connectycube-exporter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Several apps, from the values or from an existing Secret. */}}
{{- define "connectycube-exporter.configFile" -}}
{{- if and .Values.config.apps .Values.config.existingSecret }}
{{- fail "config: give apps or existingSecret, not both" }}
{{- end }}
{{- if or .Values.config.apps .Values.config.existingSecret -}}
/etc/connectycube/config/{{ .Values.config.key }}
{{- end }}
{{- end }}

{{- define "connectycube-exporter.apiKeySecret" -}}
{{- default (include "connectycube-exporter.fullname" .) .Values.apiKey.existingSecret }}
{{- end }}

{{/* HTTPS on /metrics and the probes. */}}
{{- define "connectycube-exporter.https" -}}
{{- if and .Values.webConfig.existingSecret .Values.webConfig.tls }}true{{ end }}
{{- end }}

{{/* The exporter's own ConfigMap (the apps file); its checksum restarts the pods. */}}
{{- define "connectycube-exporter.configMap" -}}
{{- if .Values.config.apps }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "connectycube-exporter.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "connectycube-exporter.labels" . | nindent 4 }}
data:
  {{ .Values.config.key }}: |
    {{- dict "apps" .Values.config.apps | toYaml | nindent 4 }}
{{- end }}
{{- end }}
