{{/* Names and labels shared by every object of the chart. */}}
{{- define "sgbus.fullname" -}}
{{- printf "%s" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "sgbus.labels" -}}
app.kubernetes.io/part-of: sgbus
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sgbus.selector" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sgbus.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* Environment every sgbus process needs: Kafka over TLS with its own SCRAM user, the
partnership CA, the metrics endpoint's TLS. Secrets are referenced, never inlined. */}}
{{- define "sgbus.commonEnv" -}}
- name: SGBUS_HOME
  value: /var/lib/sgbus
- name: SGBUS_KAFKA_BOOTSTRAP
  value: {{ .root.Values.kafka.bootstrap | quote }}
- name: SGBUS_KAFKA_USERNAME
  value: {{ .user | quote }}
- name: SGBUS_KAFKA_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .user | quote }}, key: password}}
- name: SGBUS_CA_FILE
  value: /etc/sgbus/ca/ca.crt
- name: SGBUS_METRICS_HOST
  value: "0.0.0.0"
- name: SGBUS_METRICS_PORT
  value: {{ .root.Values.monitoring.metricsPort | quote }}
- name: SGBUS_METRICS_TLS_CERT
  value: /etc/sgbus/metrics-tls/tls.crt
- name: SGBUS_METRICS_TLS_KEY
  value: /etc/sgbus/metrics-tls/tls.key
- name: SGBUS_METRICS_CLIENT_CA
  value: /etc/sgbus/metrics-tls/ca.crt
{{- end -}}

{{/* OPA's URL and the worker token: only for processes that ask for decisions (stages, gateway). */}}
{{- define "sgbus.opaEnv" -}}
- name: SGBUS_OPA_URL
  value: {{ printf "https://%s-opa:8181" (include "sgbus.fullname" .) | quote }}
- name: SGBUS_OPA_TOKEN
  valueFrom: {secretKeyRef: {name: {{ .Values.secrets.opaTokens | quote }}, key: decide}}
{{- end -}}

{{- define "sgbus.commonVolumeMounts" -}}
- {name: home, mountPath: /var/lib/sgbus}
- {name: tmp, mountPath: /tmp}
- {name: partnership-ca, mountPath: /etc/sgbus/ca, readOnly: true}
- {name: metrics-tls, mountPath: /etc/sgbus/metrics-tls, readOnly: true}
{{- end -}}

{{- define "sgbus.commonVolumes" -}}
- {name: home, emptyDir: {}}
- {name: tmp, emptyDir: {}}
- name: partnership-ca
  secret: {secretName: {{ .Values.secrets.partnershipCa | quote }}, items: [{key: ca.crt, path: ca.crt}]}
- name: metrics-tls
  secret: {secretName: {{ .Values.secrets.metricsTls | quote }}}
{{- end -}}

{{/* The audit store secret of one component (audit, ingest, gateway). Before each had its own
login, secrets.auditDsn named one secret for all: refuse it rather than give every pod a login
that can rewrite the chain. */}}
{{- define "sgbus.auditDsnSecret" -}}
{{- $dsn := .root.Values.secrets.auditDsn -}}
{{- if not (kindIs "map" $dsn) -}}
{{- fail "secrets.auditDsn is now one secret per component (audit, ingest, gateway), each with a login from `sgbus audit roles`: see the README, \"Audit store roles\"" -}}
{{- end -}}
{{- required (printf "secrets.auditDsn.%s: the %s's audit store secret" .component .component) (index $dsn .component) -}}
{{- end }}
