{{/* Names. */}}
{{- define "mcptrust.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name (52 characters at most, so that suffixes such as
"-webhook-tls" keep names within 63). */}}
{{- define "mcptrust.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mcptrust.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mcptrust.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcptrust.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mcptrust.labels" -}}
helm.sh/chart: {{ include "mcptrust.chart" . }}
{{ include "mcptrust.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mcptrust
{{- end }}

{{- define "mcptrust.serviceAccountName" -}}
{{- default (include "mcptrust.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* The MutatingWebhookConfiguration (cluster-scoped, so named after the release). */}}
{{- define "mcptrust.webhookConfigName" -}}
{{- include "mcptrust.fullname" . }}
{{- end }}

{{- define "mcptrust.webhookServiceName" -}}
{{- printf "%s-webhook" (include "mcptrust.fullname" .) }}
{{- end }}

{{/* The Secret holding the webhook's serving certificate (tls.crt, tls.key). */}}
{{- define "mcptrust.webhookSecretName" -}}
{{- if eq .Values.webhook.certMode "provided" }}
{{- required "webhook.provided.secretName is required with webhook.certMode=provided" .Values.webhook.provided.secretName }}
{{- else }}
{{- printf "%s-webhook-tls" (include "mcptrust.fullname" .) }}
{{- end }}
{{- end }}

{{- define "mcptrust.leaseName" -}}
{{- default (printf "%s-controller" (include "mcptrust.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "mcptrust.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when the chart is rendered against a cluster (helm install/upgrade, or
--dry-run=server), empty under `helm template`, `helm lint` and client dry runs, where
lookup returns nothing. Used to fail early on missing prerequisites only when that can be
known. */}}
{{- define "mcptrust.connected" -}}
{{- if lookup "v1" "Namespace" "" "kube-system" }}true{{ end }}
{{- end }}

{{/* The namespaces the webhook and the policy never touch. */}}
{{- define "mcptrust.excludedNamespaces" -}}
{{- $ns := list "kube-system" .Release.Namespace }}
{{- range .Values.webhook.excludeNamespaces }}{{ $ns = append $ns . }}{{ end }}
{{- toJson (uniq $ns) }}
{{- end }}

{{/* namespaceSelector and objectSelector shared by the webhook and the policy: opted-in
namespaces, never kube-system or the release namespace, and not pods that opted out. */}}
{{- define "mcptrust.namespaceSelector" -}}
matchExpressions:
  - key: mcptrust.io/injection
    operator: In
    values: ["enabled"]
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: {{ include "mcptrust.excludedNamespaces" . }}
{{- end }}

{{- define "mcptrust.objectSelector" -}}
matchExpressions:
  - key: mcptrust.io/inject
    operator: NotIn
    values: ["false"]
{{- end }}

{{/* The private CAs of the namespace-default bundle: trust.extraCAs, then each
trust.extraCAsFrom entry read with lookup (only when connected to a cluster). */}}
{{- define "mcptrust.extraCAs" -}}
{{- $pems := list }}
{{- if trim .Values.trust.extraCAs }}
{{- $pems = append $pems (trim .Values.trust.extraCAs) }}
{{- end }}
{{- $connected := include "mcptrust.connected" . }}
{{- range $i, $ref := .Values.trust.extraCAsFrom }}
{{- if $connected }}
{{- if $ref.configMap }}
{{- $obj := lookup "v1" "ConfigMap" $.Release.Namespace $ref.configMap.name }}
{{- $pem := dig "data" $ref.configMap.key "" $obj }}
{{- if not $pem }}
{{- fail (printf "trust.extraCAsFrom[%d]: ConfigMap %s/%s has no key %q; create it first (kubectl -n %s create configmap %s --from-file=%s=ca.pem)" $i $.Release.Namespace $ref.configMap.name $ref.configMap.key $.Release.Namespace $ref.configMap.name $ref.configMap.key) }}
{{- end }}
{{- $pems = append $pems (trim $pem) }}
{{- else }}
{{- $obj := lookup "v1" "Secret" $.Release.Namespace $ref.secret.name }}
{{- $b64 := dig "data" $ref.secret.key "" $obj }}
{{- if not $b64 }}
{{- fail (printf "trust.extraCAsFrom[%d]: Secret %s/%s has no key %q; create it first (kubectl -n %s create secret generic %s --from-file=%s=ca.pem)" $i $.Release.Namespace $ref.secret.name $ref.secret.key $.Release.Namespace $ref.secret.name $ref.secret.key) }}
{{- end }}
{{- $pems = append $pems (trim (b64dec $b64)) }}
{{- end }}
{{- end }}
{{- end }}
{{- $all := join "\n" $pems }}
{{- if contains "PRIVATE KEY" $all }}
{{- fail "trust.extraCAs / trust.extraCAsFrom hold a private key: give only the CA certificates (PEM CERTIFICATE blocks)" }}
{{- end }}
{{- if $all }}{{ printf "%s\n" $all }}{{ end }}
{{- end }}

{{/* The operator's config file (what MCPTRUST_CONFIG points at). Keys are exactly those
of mcptrust's InjectConfig, which rejects unknown ones; empty optional values are left
out so that the operator's defaults apply. */}}
{{- define "mcptrust.config" -}}
{{- $p := .Values.proxy }}
{{- $proxy := dict "noProxy" $p.noProxy "serviceCidrs" $p.serviceCidrs "podCidrs" $p.podCidrs "apiServerIps" $p.apiServerIps }}
{{- with $p.httpProxy }}{{ $_ := set $proxy "httpProxy" . }}{{ end }}
{{- with $p.httpsProxy }}{{ $_ := set $proxy "httpsProxy" . }}{{ end }}
{{- with $p.clusterDomain }}{{ $_ := set $proxy "clusterDomain" . }}{{ end }}
{{- $i := .Values.injection }}
{{- $defaultTrust := dict "extraCasPem" (include "mcptrust.extraCAs" .) "includeSystemRoots" .Values.trust.includeSystemRoots }}
{{- /* The reloader sidecar runs this chart's own image, as the operator Deployment does. */}}
{{- $reloader := dict "image" (include "mcptrust.image" .) "imagePullPolicy" .Values.image.pullPolicy "adminPort" .Values.reloader.adminPort "resources" .Values.reloader.resources }}
{{- $cfg := dict "mountPath" $i.mountPath "volumeName" $i.volumeName "trustConfigMap" $i.trustConfigMap "proxy" $proxy "caVariables" $i.caVariables "overlaySystemTrust" $i.overlaySystemTrust "extraEnv" $i.extraEnv "defaultTrust" $defaultTrust "reloader" $reloader }}
{{- toYaml $cfg }}
{{- end }}
