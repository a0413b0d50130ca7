{{- define "woodpecker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "woodpecker.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "woodpecker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "woodpecker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "woodpecker.selector" -}}
app.kubernetes.io/name: {{ include "woodpecker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "woodpecker.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "woodpecker.secretName" -}}
{{- .Values.objectStoreCredentials.existingSecret | default (printf "%s-object-store" (include "woodpecker.fullname" .)) -}}
{{- end -}}

{{/* Environment every process gets: credentials, tracing sampler, extra variables. */}}
{{- define "woodpecker.env" -}}
- name: WOODPECKER_CONFIG__MINIO__ACCESSKEYID
  valueFrom:
    secretKeyRef:
      name: {{ include "woodpecker.secretName" . }}
      key: accessKeyID
- name: WOODPECKER_CONFIG__MINIO__SECRETACCESSKEY
  valueFrom:
    secretKeyRef:
      name: {{ include "woodpecker.secretName" . }}
      key: secretAccessKey
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- with .Values.tracing.sampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ . | quote }}
{{- end }}
{{- with .Values.tracing.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
