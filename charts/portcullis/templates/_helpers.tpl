{{/* Names, labels and shared pieces of the Portcullis chart. */}}

{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portcullis.fullname" -}}
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

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: call with (list . "controller"). */}}
{{- define "portcullis.selector" -}}
{{- $ctx := index . 0 }}
app.kubernetes.io/name: {{ include "portcullis.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "portcullis.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* A Service's name, `<fullname>-<suffix>`: Service names are DNS labels of at most 63
characters, so a longer one is cut with a hash of the whole appended (distinct names stay
distinct). Call with (list . "sync"). */}}
{{- define "portcullis.serviceName" -}}
{{- $name := printf "%s-%s" (include "portcullis.fullname" (index . 0)) (index . 1) }}
{{- if gt (len $name) 63 }}
{{- printf "%s-%s" ($name | trunc 52 | trimSuffix "-") ($name | sha256sum | trunc 10) }}
{{- else }}
{{- $name }}
{{- end }}
{{- end }}

{{/* The sync Service's DNS name: what dataplanes dial and the controller certificate names. */}}
{{- define "portcullis.syncHost" -}}
{{ include "portcullis.serviceName" (list . "sync") }}.{{ .Release.Namespace }}.svc
{{- end }}

{{- define "portcullis.controllerTLSSecret" -}}
{{ .Values.syncTLS.controllerSecret | default (printf "%s-controller-sync-tls" (include "portcullis.fullname" .)) }}
{{- end }}

{{- define "portcullis.dataplaneTLSSecret" -}}
{{ .Values.syncTLS.dataplaneSecret | default (printf "%s-dataplane-sync-tls" (include "portcullis.fullname" .)) }}
{{- end }}

{{- define "portcullis.httpsSecret" -}}
{{ .Values.dataplane.https.secretName | default (printf "%s-default-tls" (include "portcullis.fullname" .)) }}
{{- end }}

{{/* Hardening shared by both components: non-root, read-only root filesystem, no capabilities. */}}
{{- define "portcullis.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "portcullis.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}
