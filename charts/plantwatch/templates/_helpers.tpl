{{/* Common labels, from one place. */}}
{{- define "plantwatch.labels" -}}
app.kubernetes.io/name: plantwatch
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "plantwatch.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "plantwatch.brokerURL" -}}
{{- if .Values.broker.enabled -}}
mqtts://{{ .Release.Name }}-broker.{{ .Release.Namespace }}.svc:{{ .Values.broker.port }}
{{- else -}}
{{ required "broker.url is required when broker.enabled is false" .Values.broker.url }}
{{- end -}}
{{- end -}}

{{/* One custom resource of the plant. */}}
{{- define "plantwatch.resource" -}}
apiVersion: plantwatch.io/v1alpha1
kind: {{ .kind }}
metadata:
  name: {{ .item.name }}
  labels:
    {{- include "plantwatch.labels" .root | nindent 4 }}
    {{- with .item.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- toYaml .item.spec | nindent 2 }}
{{- end -}}
