{{/* Names, labels and the connection settings shared by the templates. */}}

{{- define "controlplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>" (or just the release name when it already contains the chart name),
cut to 41 characters: a StatefulSet's name ("<fullname>-postgresql") may be at most 52, as
its pods carry a label of that name plus an 11-character revision hash (63 at most). */}}
{{- define "controlplane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 41 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 41 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 41 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "controlplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "controlplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "controlplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "controlplane.labels" -}}
helm.sh/chart: {{ include "controlplane.chart" . }}
{{ include "controlplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: controlplane
{{- end }}

{{/* Labels of one component: include with (dict "root" $ "component" "server"). */}}
{{- define "controlplane.componentLabels" -}}
{{ include "controlplane.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "controlplane.componentSelector" -}}
{{ include "controlplane.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "controlplane.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "controlplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "controlplane.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "controlplane.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "controlplane.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The API token Secret and its key. */}}
{{- define "controlplane.tokenSecretName" -}}
{{- default (printf "%s-api-token" (include "controlplane.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "controlplane.tokenEnv" -}}
- name: CONTROLPLANE_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "controlplane.tokenSecretName" . }}
      key: {{ .Values.auth.existingSecretKey }}
{{- end }}

{{/* The control plane's URL inside the cluster, for the operator and the example services. */}}
{{- define "controlplane.apiUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "controlplane.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}

{{/* NATS: the in-chart server, or the external URL (a value or a Secret). */}}
{{- define "controlplane.natsHost" -}}
{{- printf "%s-nats.%s.svc" (include "controlplane.fullname" .) .Release.Namespace }}
{{- end }}

{{/* The NATS URL as one env entry named by .name: include with (dict "root" $ "name" "X"). */}}
{{- define "controlplane.natsEnv" -}}
{{- $v := .root.Values.nats }}
- name: {{ .name }}
{{- if $v.enabled }}
  value: {{ printf "nats://%s:4222" (include "controlplane.natsHost" .root) | quote }}
{{- else if $v.urlSecret.name }}
  valueFrom:
    secretKeyRef:
      name: {{ $v.urlSecret.name }}
      key: {{ $v.urlSecret.key }}
{{- else if $v.url }}
  value: {{ $v.url | quote }}
{{- else }}
{{- fail "nats.enabled is false: set nats.url or nats.urlSecret.name to the NATS server to use" }}
{{- end }}
{{- end }}

{{/* PostgreSQL */}}
{{- define "controlplane.postgresHost" -}}
{{- printf "%s-postgresql.%s.svc" (include "controlplane.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "controlplane.postgresPasswordSecretName" -}}
{{- default (printf "%s-postgresql" (include "controlplane.fullname" .)) .Values.postgresql.auth.existingSecret }}
{{- end }}

{{- define "controlplane.databaseUrlSecretName" -}}
{{- default (printf "%s-database-url" (include "controlplane.fullname" .)) .Values.postgresql.urlSecret.name }}
{{- end }}

{{/* CONTROLPLANE_DATABASE_URL: with the in-chart server the DSN is assembled from the
password Secret (Kubernetes expands $(VAR) from the entry before it). */}}
{{- define "controlplane.databaseEnv" -}}
{{- $pg := .Values.postgresql }}
{{- if $pg.enabled }}
- name: CONTROLPLANE_DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "controlplane.postgresPasswordSecretName" . }}
      key: {{ $pg.auth.existingSecretKey }}
- name: CONTROLPLANE_DATABASE_URL
  value: {{ printf "postgresql://%s:$(CONTROLPLANE_DATABASE_PASSWORD)@%s:5432/%s" $pg.auth.username (include "controlplane.postgresHost" .) $pg.auth.database | quote }}
{{- else if or $pg.url $pg.urlSecret.name }}
- name: CONTROLPLANE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "controlplane.databaseUrlSecretName" . }}
      key: {{ $pg.urlSecret.key }}
{{- else }}
{{- fail "postgresql.enabled is false: set postgresql.url or postgresql.urlSecret.name to the database to use" }}
{{- end }}
{{- end }}

{{/* Keep a generated secret value across upgrades: the value in the live Secret if there is
one, else a new random one. Include with (dict "root" $ "secret" NAME "key" KEY). */}}
{{- define "controlplane.keptOrRandom" -}}
{{- $live := lookup "v1" "Secret" .root.Release.Namespace .secret }}
{{- if and $live $live.data (hasKey $live.data .key) }}
{{- index $live.data .key }}
{{- else }}
{{- randAlphaNum 40 | b64enc }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every pod of the chart. */}}
{{- define "controlplane.podScheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod metadata: include with (dict "root" $ "component" C), optionally "annotations". */}}
{{- define "controlplane.podMetadata" -}}
{{- $annotations := merge (dict) (.annotations | default dict) .root.Values.podAnnotations }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
labels:
  {{- include "controlplane.componentSelector" . | nindent 2 }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* Environment shared by the containers that run the control plane image. */}}
{{- define "controlplane.logEnv" -}}
- name: CONTROLPLANE_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: CONTROLPLANE_LOG_FORMAT
  value: {{ .Values.config.logFormat | quote }}
{{- end }}

{{/* The /tmp emptyDir of every container with a read-only root file system. */}}
{{- define "controlplane.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{- define "controlplane.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* What the operator may do with Sequences (kopf also patches its own annotations and
finalizers on them) and the events it posts about them. */}}
{{- define "controlplane.operatorRules" -}}
- apiGroups: [controlplane.dev]
  resources: [sequences]
  verbs: [get, list, watch, patch, update]
- apiGroups: [controlplane.dev]
  resources: [sequences/status]
  verbs: [get, patch, update]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
