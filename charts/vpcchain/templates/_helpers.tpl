{{/*
Names. The defaults are the manifest's (conflist/manifests/vpcchain.yaml):
the DaemonSet's selector is immutable and the installer's preStop is told
the DaemonSet's name, so fixed names let a release take over objects that
kubectl created and keep working after a rename of the release.
*/}}
{{- define "vpcchain.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vpcchain.fullname" -}}
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

{{- define "vpcchain.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels on every object: the manifest's app.kubernetes.io/name and Helm's
own three. The pod template carries only the selector's label and
podLabels, so a new chart version alone does not restart every node's
agent.
*/}}
{{- define "vpcchain.labels" -}}
app.kubernetes.io/name: {{ include "vpcchain.name" . }}
helm.sh/chart: {{ include "vpcchain.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "vpcchain.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vpcchain.name" . }}
{{- end -}}

{{- define "vpcchain.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vpcchain.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "vpcchain.policyHookName" -}}
{{- printf "%s-policy-hook" (include "vpcchain.fullname" .) -}}
{{- end -}}

{{- define "vpcchain.configName" -}}
{{- printf "%s-config" (include "vpcchain.fullname" .) -}}
{{- end -}}

{{- define "vpcchain.image" -}}
{{- if .Values.image.override -}}
{{- .Values.image.override -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (toString .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Every container reads the ConfigMap (the daemon and the installer must agree on it) and extraEnv. */}}
{{- define "vpcchain.envFrom" -}}
envFrom:
  - configMapRef:
      name: {{ include "vpcchain.configName" . }}
{{- end -}}
