{{/*
The chart name, shortened to the 63 characters Kubernetes allows in names and labels.
*/}}
{{- define "fleetserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified app name: release name plus chart name, unless one contains the other.
*/}}
{{- define "fleetserve.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "fleetserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of a release.
*/}}
{{- define "fleetserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fleetserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The recommended labels on every object the chart renders.
*/}}
{{- define "fleetserve.labels" -}}
helm.sh/chart: {{ include "fleetserve.chart" . }}
{{ include "fleetserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: fleetserve
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "fleetserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fleetserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image, and the image it gives runtime and router pods.
*/}}
{{- define "fleetserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "fleetserve.runtimeImage" -}}
{{- default (include "fleetserve.image" .) .Values.operator.runtimeImage }}
{{- end }}
