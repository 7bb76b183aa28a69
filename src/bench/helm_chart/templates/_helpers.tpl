{{- define "labels" -}}
app.kubernetes.io/name: {{ .Values._release.app }}
app.kubernetes.io/instance: {{ .Values._release.name }}
app.kubernetes.io/managed-by: kdeploy
kdeploy.io/environment: {{ .Values._release.env }}
{{- if .Values.team }}
app.kubernetes.io/part-of: {{ .Values.team }}
team: {{ .Values.team }}
{{- end }}
{{- end -}}
{{- define "selector" -}}
app.kubernetes.io/name: {{ .Values._release.app }}
app.kubernetes.io/instance: {{ .Values._release.name }}
{{- end -}}
