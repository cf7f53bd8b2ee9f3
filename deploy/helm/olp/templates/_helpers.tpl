{{/*
Helpers of the OLP chart: names, labels, the image, the environment every component shares
(one value -> one OLP_* / OTEL_* variable), volumes, probes and the checks that fail early on
inconsistent values.
*/}}

{{- define "olp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "olp.fullname" -}}
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

{{- define "olp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels shared by every object and pod of the release. */}}
{{- define "olp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "olp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "olp.labels" -}}
helm.sh/chart: {{ include "olp.chart" . }}
{{ include "olp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: olp
{{- end }}

{{/* Component labels: call with (dict "root" $ "component" "policy-store"). */}}
{{- define "olp.componentSelectorLabels" -}}
{{ include "olp.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "olp.componentLabels" -}}
{{ include "olp.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "olp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "olp.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The pre-install hook Job runs before the chart's ServiceAccount exists, so it cannot use it;
it uses a ServiceAccount you manage (serviceAccount.create=false) or the namespace default one,
never with a mounted token.
*/}}
{{- define "olp.hookServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}default{{ else }}{{ include "olp.serviceAccountName" . }}{{ end }}
{{- end }}

{{- define "olp.policyStoreName" -}}
{{- printf "%s-policy-store" (include "olp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "olp.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Roles -> the topic suffixes each role consumes (for KEDA lag triggers). Mirrors the data flow of
spec section 3 and the module docstrings in processors/.
*/}}
{{- define "olp.roleInputs" -}}
chunk_splitter: [transcripts]
topic_finder: [chunks]
topic_locator: [found]
relationship_checker: [located]
content_organizer: [checked]
format_checker: [organized]
{{- end }}

{{/*
Deep merge honouring explicit false/0/"" in the override (sprig's merge would let the base win
over them): call with (dict "base" $map "override" $map); returns YAML.
*/}}
{{- define "olp.deepMerge" -}}
{{- $out := deepCopy .base }}
{{- range $key, $value := .override }}
{{- $current := get $out $key }}
{{- if and (kindIs "map" $value) (kindIs "map" $current) }}
{{- $_ := set $out $key (include "olp.deepMerge" (dict "base" $current "override" $value) | fromYaml) }}
{{- else }}
{{- $_ := set $out $key $value }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* The worker groups with workers.defaults merged in; returns YAML {groups: [...]}. */}}
{{- define "olp.workerGroups" -}}
{{- $groups := list }}
{{- range .Values.workers.groups }}
{{- $groups = append $groups (include "olp.deepMerge" (dict "base" $.Values.workers.defaults "override" .) | fromYaml) }}
{{- end }}
{{- toYaml (dict "groups" $groups) }}
{{- end }}

{{- define "olp.workerName" -}}
{{- printf "%s-%s" (include "olp.fullname" .root) .group.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Checks of values the schema cannot express; each fails the render with a readable message.
*/}}
{{- define "olp.validate" -}}
{{- $k := .Values.kafka }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
{{- if not $k.sasl.mechanism }}
{{- fail (printf "kafka.sasl.mechanism is required with kafka.securityProtocol=%s" $k.securityProtocol) }}
{{- end }}
{{- if not $k.sasl.existingSecret }}
{{- fail (printf "kafka.sasl.existingSecret (the Secret holding the SASL password) is required with kafka.securityProtocol=%s" $k.securityProtocol) }}
{{- end }}
{{- if eq $k.sasl.mechanism "OAUTHBEARER" }}
{{- if not (and $k.sasl.oauthbearer.tokenEndpointUrl $k.sasl.oauthbearer.clientId) }}
{{- fail "SASL OAUTHBEARER needs kafka.sasl.oauthbearer.tokenEndpointUrl and kafka.sasl.oauthbearer.clientId (the client secret comes from kafka.sasl.existingSecret)" }}
{{- end }}
{{- else if not (or $k.sasl.username $k.sasl.usernameKey) }}
{{- fail "set kafka.sasl.username or kafka.sasl.usernameKey for SASL" }}
{{- end }}
{{- else if or $k.sasl.mechanism $k.sasl.existingSecret }}
{{- fail (printf "kafka.sasl.* is set but kafka.securityProtocol=%s does not use SASL" $k.securityProtocol) }}
{{- end }}
{{- if not (has $k.securityProtocol (list "SSL" "SASL_SSL")) }}
{{- range $name := list "caSecret" "clientSecret" }}
{{- if get $k.tls $name }}
{{- fail (printf "kafka.tls.%s is set but kafka.securityProtocol=%s does not use TLS" $name $k.securityProtocol) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $k.tls.keyPasswordKey (not $k.tls.clientSecret) }}
{{- fail "kafka.tls.keyPasswordKey needs kafka.tls.clientSecret (the Secret with the client certificate, key and its password)" }}
{{- end }}
{{- if not (or .Values.policyStore.readToken.existingSecret .Values.policyStore.allowUnauthenticatedReads) }}
{{- fail "policyStore.readToken.existingSecret is required: the policy store listens on the pod's addresses and its dashboard shows transcript text, which the NetworkPolicy does not hide from the pods it lets in. Name a Secret with the read token, or set policyStore.allowUnauthenticatedReads=true behind a proxy that authenticates readers" }}
{{- end }}
{{- if and .Values.schemaRegistryUrl .Values.schemaRegistry.existingSecret }}
{{- fail "set schemaRegistryUrl or schemaRegistry.existingSecret (the URL with credentials), not both" }}
{{- end }}
{{- if and .Values.ingest.enabled (not (or .Values.ingest.senders (default dict .Values.config.ingest).news)) }}
{{- fail "ingest.enabled needs ingest.senders (or config.ingest.news): without a sender the ingest service refuses every request" }}
{{- end }}
{{- $documentsConfig := default dict .Values.config.documents }}
{{- if and .Values.documents.enabled (not .Values.documents.readToken.existingSecret) (not $documentsConfig.open_reads) }}
{{- fail "documents.readToken.existingSecret is required when documents.enabled: the read API listens on the pod's addresses, and transcript text needs a token there (or set config.documents.open_reads=true behind a proxy that authenticates readers)" }}
{{- end }}
{{- if and (or .Values.documents.webhookToken.existingSecret .Values.documents.webhookSecret.existingSecret) (not $documentsConfig.webhook) }}
{{- fail "documents.webhookToken / documents.webhookSecret need config.documents.webhook.url" }}
{{- end }}
{{- if and (not .Values.networkPolicy.enabled) (not .Values.policyStore.apiToken.existingSecret) }}
{{- fail "the policy store listens on the pod's addresses: keep networkPolicy.enabled or set policyStore.apiToken.existingSecret" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled (the /metrics endpoints)" }}
{{- end }}
{{- if and .Values.otel.enabled (not .Values.otel.endpoint) }}
{{- fail "otel.endpoint (your collector's OTLP endpoint) is required when otel.enabled" }}
{{- end }}
{{- if and .Values.modelApiKeys.envVars (not .Values.modelApiKeys.existingSecret) }}
{{- fail "modelApiKeys.existingSecret is required when modelApiKeys.envVars lists variables" }}
{{- end }}
{{- range .Values.catalog.models }}
{{- if and .api_key_env (not (has .api_key_env $.Values.modelApiKeys.envVars)) }}
{{- fail (printf "catalog model %s reads its API key from %s: add it to modelApiKeys.envVars" .name .api_key_env) }}
{{- end }}
{{- end }}
{{- $seenGroups := dict }}
{{- $seenRoles := dict }}
{{- range .Values.workers.groups }}
{{- if hasKey $seenGroups .name }}
{{- fail (printf "workers.groups: the group name %s is used twice" .name) }}
{{- end }}
{{- $_ := set $seenGroups .name true }}
{{- $group := .name }}
{{- range .roles }}
{{- if hasKey $seenRoles . }}
{{- fail (printf "workers.groups: role %s is in groups %s and %s; put each role in one group" . (get $seenRoles .) $group) }}
{{- end }}
{{- $_ := set $seenRoles . $group }}
{{- end }}
{{- end }}
{{- end }}

{{/* Roles that no worker group runs (NOTES warns about them). */}}
{{- define "olp.missingRoles" -}}
{{- $running := list }}
{{- range .Values.workers.groups }}{{ $running = concat $running .roles }}{{ end }}
{{- $missing := list }}
{{- range $role, $_ := include "olp.roleInputs" . | fromYaml }}
{{- if not (has $role $running) }}{{ $missing = append $missing $role }}{{ end }}
{{- end }}
{{- join ", " $missing }}
{{- end }}

{{/*
Kafka connection variables: every component needs them. Secrets only by reference.
*/}}
{{- define "olp.env.kafka" -}}
{{- $k := .Values.kafka }}
- name: OLP_KAFKA__BOOTSTRAP_SERVERS
  value: {{ $k.bootstrapServers | quote }}
- name: OLP_KAFKA__SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: OLP_KAFKA__SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
{{- if eq $k.sasl.mechanism "OAUTHBEARER" }}
{{- $o := $k.sasl.oauthbearer }}
- name: OLP_KAFKA__SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL
  value: {{ $o.tokenEndpointUrl | quote }}
- name: OLP_KAFKA__SASL_OAUTHBEARER_CLIENT_ID
  value: {{ $o.clientId | quote }}
- name: OLP_KAFKA__SASL_OAUTHBEARER_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret | quote }}
      key: {{ $o.clientSecretKey | quote }}
{{- with $o.scope }}
- name: OLP_KAFKA__SASL_OAUTHBEARER_SCOPE
  value: {{ . | quote }}
{{- end }}
{{- else }}
{{- if $k.sasl.usernameKey }}
- name: OLP_KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret | quote }}
      key: {{ $k.sasl.usernameKey | quote }}
{{- else }}
- name: OLP_KAFKA__SASL_USERNAME
  value: {{ $k.sasl.username | quote }}
{{- end }}
- name: OLP_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret | quote }}
      key: {{ $k.sasl.passwordKey | quote }}
{{- end }}
{{- end }}
{{- if has $k.securityProtocol (list "SSL" "SASL_SSL") }}
{{- if $k.tls.caSecret }}
- name: OLP_KAFKA__SSL_CAFILE
  value: /etc/olp/kafka/ca.crt
{{- end }}
{{- if $k.tls.clientSecret }}
- name: OLP_KAFKA__SSL_CERTFILE
  value: /etc/olp/kafka/client.crt
- name: OLP_KAFKA__SSL_KEYFILE
  value: /etc/olp/kafka/client.key
{{- with $k.tls.keyPasswordKey }}
- name: OLP_KAFKA__SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $k.tls.clientSecret | quote }}
      key: {{ . | quote }}
{{- end }}
{{- end }}
- name: OLP_KAFKA__SSL_CHECK_HOSTNAME
  value: {{ $k.tls.checkHostname | quote }}
{{- end }}
- name: OLP_KAFKA__PARTITIONS
  value: {{ $k.partitions | quote }}
- name: OLP_KAFKA__REPLICATION_FACTOR
  value: {{ $k.replicationFactor | quote }}
- name: OLP_KAFKA__PRODUCER_MAX_BATCH_SIZE
  value: {{ $k.producerMaxBatchSize | quote }}
- name: OLP_TOPIC_PREFIX
  value: {{ .Values.topicPrefix | quote }}
- name: OLP_APP_ID
  value: {{ .Values.appId | quote }}
{{- with .Values.schemaRegistryUrl }}
- name: OLP_SCHEMA_REGISTRY_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.schemaRegistry.existingSecret }}
- name: OLP_SCHEMA_REGISTRY_URL
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.schemaRegistry.urlKey | quote }}
{{- end }}
- name: OLP_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: OLP_DATA_DIR
  value: {{ .Values.dataDir | quote }}
{{- end }}

{{/* The catalog and the config file (not for the pre-install Job: its ConfigMaps come later). */}}
{{- define "olp.env.files" -}}
- name: OLP_CATALOG_PATH
  value: /etc/olp/catalog.yaml
- name: OLP_CONFIG_FILE
  value: /etc/olp/config.yaml
{{- end }}

{{/* Model provider API keys, each from the existing Secret's key of the same name. */}}
{{- define "olp.env.modelKeys" -}}
{{- range .Values.modelApiKeys.envVars }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.modelApiKeys.existingSecret | quote }}
      key: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
OpenTelemetry: call with (dict "root" $ "component" "splitter" "metrics" true|false); `metrics`:
the component serves /metrics, so metrics.enabled adds the prometheus reader.
*/}}
{{- define "olp.env.otel" -}}
{{- $o := .root.Values.otel }}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_SERVICE_NAME
  value: {{ printf "%s-%s" $o.serviceNamePrefix .component | quote }}
{{- $attrs := list (printf "service.namespace=%s" .root.Release.Name) (printf "service.version=%s" .root.Chart.AppVersion) (printf "k8s.namespace.name=%s" .root.Release.Namespace) "k8s.pod.name=$(K8S_POD_NAME)" }}
{{- range $key, $value := $o.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%v" $key $value) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- $prometheus := and .metrics .root.Values.metrics.enabled }}
{{- if $prometheus }}
- name: OTEL_METRICS_EXPORTER
  value: {{ ternary "otlp,prometheus" "prometheus" $o.enabled | quote }}
{{- end }}
{{- if $o.enabled }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $o.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $o.protocol | quote }}
{{- with $o.headers.existingSecret }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $o.headers.key | quote }}
{{- end }}
{{- else if $prometheus }}
- name: OTEL_TRACES_EXPORTER
  value: "none"
{{- else }}
- name: OTEL_SDK_DISABLED
  value: "true"
{{- end }}
{{- end }}

{{- define "olp.env.extra" -}}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Writable emptyDirs (the root filesystem is read-only). */}}
{{- define "olp.volumes.scratch" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.emptyDirSizeLimit }}
- name: data
  emptyDir:
    sizeLimit: {{ .Values.emptyDirSizeLimit }}
{{- end }}

{{- define "olp.volumeMounts.scratch" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: {{ .Values.dataDir }}
{{- end }}

{{/* kafka.extraVolumes / extraVolumeMounts (client certificates): every pod talks to Kafka. */}}
{{- define "olp.volumes.kafka" -}}
{{- with .Values.kafka.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "olp.volumeMounts.kafka" -}}
{{- with .Values.kafka.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The config file: `config` plus kafka.config as its `kafka:` section (the connection and the
secrets stay environment variables).
*/}}
{{- define "olp.configFile" -}}
{{- $file := deepCopy .Values.config }}
{{- with .Values.kafka.config }}
{{- $_ := set $file "kafka" . }}
{{- end }}
{{- toYaml $file }}
{{- end }}

{{/*
Port of a URL (explicit, else the scheme's default) and of each host:port of a list, for the
egress rules.
*/}}
{{- define "olp.urlPort" -}}
{{- $url := urlParse . }}
{{- $hostPort := splitList ":" $url.host }}
{{- if gt (len $hostPort) 1 }}{{ last $hostPort }}{{ else if eq $url.scheme "https" }}443{{ else }}80{{ end }}
{{- end }}

{{/*
A feed service's name: call with (dict "root" $ "service" "ingest").
*/}}
{{- define "olp.serviceName" -}}
{{- printf "%s-%s" (include "olp.fullname" .root) .service | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
/etc/olp: catalog.yaml, config.yaml, (with kafka.tls.caSecret) kafka/ca.crt and (with
kafka.tls.clientSecret) kafka/client.crt and kafka/client.key, the key readable by the pod's group
(fsGroup) only, in one read-only projected volume. Call with (dict "root" $ "files" true|false).
*/}}
{{- define "olp.volumes.etc" -}}
{{- $root := .root }}
{{- $tls := $root.Values.kafka.tls }}
{{- if or .files $tls.caSecret $tls.clientSecret }}
- name: etc-olp
  projected:
    defaultMode: 0444
    sources:
      {{- if .files }}
      - configMap:
          name: {{ include "olp.fullname" $root }}-catalog
          items:
            - key: catalog.yaml
              path: catalog.yaml
      - configMap:
          name: {{ include "olp.fullname" $root }}-config
          items:
            - key: config.yaml
              path: config.yaml
      {{- end }}
      {{- with $root.Values.kafka.tls.caSecret }}
      - secret:
          name: {{ . | quote }}
          items:
            - key: {{ $root.Values.kafka.tls.caKey | quote }}
              path: kafka/ca.crt
      {{- end }}
      {{- with $tls.clientSecret }}
      - secret:
          name: {{ . | quote }}
          items:
            - key: {{ $tls.certKey | quote }}
              path: kafka/client.crt
            - key: {{ $tls.keyKey | quote }}
              path: kafka/client.key
              mode: 0440
      {{- end }}
{{- end }}
{{- end }}

{{- define "olp.volumeMounts.etc" -}}
{{- $tls := .root.Values.kafka.tls }}
{{- if or .files $tls.caSecret $tls.clientSecret }}
- name: etc-olp
  mountPath: /etc/olp
  readOnly: true
{{- end }}
{{- end }}

{{/* startup/liveness on /healthz, readiness on /readyz, port "http": call with a probes timing map. */}}
{{- define "olp.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  {{- toYaml .startup | nindent 2 }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  {{- toYaml .liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  {{- toYaml .readiness | nindent 2 }}
{{- end }}

{{/* Rolls pods when the catalog or the config file changes. */}}
{{- define "olp.checksumAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}

{{- define "olp.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
