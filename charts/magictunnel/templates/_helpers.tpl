{{/*
Chart name, truncated to the 63-character label limit.
*/}}
{{- define "magictunnel.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, prefixed to the chart name unless it already contains it.
*/}}
{{- define "magictunnel.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "magictunnel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "magictunnel.labels" -}}
helm.sh/chart: {{ include "magictunnel.chart" . }}
{{ include "magictunnel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels selecting the operator pod.
*/}}
{{- define "magictunnel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "magictunnel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the operator's service account.
*/}}
{{- define "magictunnel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "magictunnel.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image: repository:tag, the tag defaulting to the chart's appVersion.
*/}}
{{- define "magictunnel.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
Tunnel pod image: repository:tag, the tag defaulting to the chart's appVersion.
*/}}
{{- define "magictunnel.tunnelImage" -}}
{{- printf "%s:%s" .Values.tunnelImage.repository (.Values.tunnelImage.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
The account ID, checked: required, and 1 to 32 lowercase letters or digits.
`helm install`/`helm template` stop at `required` or `fail` with the message.
`helm lint` runs templates in lint mode, where Helm downgrades `required` and
`fail` to [INFO] log lines; the `include` of a template that does not exist is
then reached and makes lint fail as well, its error quoting the same message.
*/}}
{{- define "magictunnel.accountId" -}}
{{- $required := "accountId is required: set it to the account the tunnels belong to (1 to 32 lowercase letters or digits), e.g. --set-string accountId=0123456789abcdef0123456789abcdef" }}
{{- $id := required $required .Values.accountId | toString }}
{{- $msg := "" }}
{{- if not $id }}
{{- $msg = $required }}
{{- else if not (regexMatch "^[a-z0-9]{1,32}$" $id) }}
{{- $msg = printf "accountId '%s' is invalid: it must match ^[a-z0-9]{1,32}$ (1 to 32 lowercase letters or digits; use --set-string, or quote it in YAML, if it is all digits)" $id }}
{{- fail $msg }}
{{- end }}
{{- if $msg }}
{{- include (printf "ERROR: %s" $msg) . }}
{{- end }}
{{- $id }}
{{- end }}

{{/*
The log format, checked: json or text.
*/}}
{{- define "magictunnel.logFormat" -}}
{{- if not (has .Values.logFormat (list "json" "text")) }}
{{- $msg := printf "logFormat '%s' is invalid: it must be json or text" (toString .Values.logFormat) }}
{{- fail $msg }}
{{- include (printf "ERROR: %s" $msg) . }}{{/* only reached under helm lint, see magictunnel.accountId */}}
{{- end }}
{{- .Values.logFormat }}
{{- end }}
