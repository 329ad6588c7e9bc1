{{/* The gateways' shared store: its URL (no password) and the Secret key holding the password, NAME/KEY; both empty
without one. */}}
{{- define "plantwatch.store.dbURL" -}}
{{- $pg := .Values.store.postgres -}}
{{- if $pg.enabled -}}
postgresql://{{ $pg.user }}@{{ .Release.Name }}-postgres.{{ .Release.Namespace }}.svc:{{ $pg.port }}/{{ $pg.database }}
{{- else -}}
{{ $pg.external.url }}
{{- end -}}
{{- end -}}

{{- define "plantwatch.store.dbPasswordSecret" -}}
{{- $pg := .Values.store.postgres -}}
{{- if $pg.enabled -}}
{{ .Release.Name }}-postgres/password
{{- else if $pg.external.url -}}
{{- $ref := required "store.postgres.external.passwordSecret {name, key} is required with store.postgres.external.url" $pg.external.passwordSecret.name -}}
{{ $ref }}/{{ required "store.postgres.external.passwordSecret.key is required" $pg.external.passwordSecret.key }}
{{- end -}}
{{- end -}}

{{- define "plantwatch.store.selector" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: store
{{- end -}}
