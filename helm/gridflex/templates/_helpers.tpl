{{/* Names, labels and the settings file the chart renders. */}}

{{- define "gridflex.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* StatefulSet pods are <fullname>-<ordinal> and carry a controller-revision-hash label,
     so the name stays short. */}}
{{- define "gridflex.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else if contains (include "gridflex.name" .) .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "gridflex.name" .) | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gridflex.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gridflex.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end -}}

{{- define "gridflex.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gridflex.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gridflex
{{- end -}}

{{- define "gridflex.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gridflex.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gridflex.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The TLS material in use: the API's (serve) or the OCPP endpoint's (edge). */}}
{{- define "gridflex.tlsValues" -}}
{{- if eq .Values.mode "serve" -}}
{{- toYaml .Values.api.tls -}}
{{- else -}}
{{- toYaml .Values.edge.tls -}}
{{- end -}}
{{- end -}}

{{- define "gridflex.tlsEnabled" -}}
{{- if eq .Values.mode "serve" -}}
{{- if and .Values.api.enabled .Values.api.tls.enabled -}}true{{- end -}}
{{- else if .Values.edge.tls.enabled -}}true
{{- end -}}
{{- end -}}

{{- define "gridflex.tlsSecret" -}}
{{- $tls := include "gridflex.tlsValues" . | fromYaml -}}
{{- default (printf "%s-tls" (include "gridflex.fullname" .)) $tls.existingSecret -}}
{{- end -}}

{{- define "gridflex.stationsSecret" -}}
{{- default (include "gridflex.fullname" .) .Values.edge.existingStationsSecret -}}
{{- end -}}

{{- define "gridflex.tokensSecret" -}}
{{- default (include "gridflex.fullname" .) .Values.api.existingTokensSecret -}}
{{- end -}}

{{- define "gridflex.historySecret" -}}
{{- default (include "gridflex.fullname" .) .Values.history.existingSecret -}}
{{- end -}}

{{/* Whether the chart's own Secret has anything to hold. */}}
{{- define "gridflex.ownSecret" -}}
{{- $serve := eq .Values.mode "serve" -}}
{{- if or (and $serve .Values.api.enabled (not .Values.api.existingTokensSecret)) (and .Values.history.token (not .Values.history.existingSecret)) (and (not $serve) .Values.edge.stations (not .Values.edge.existingStationsSecret)) -}}
true
{{- end -}}
{{- end -}}

{{/* The settings file of `gridflex serve`: the user's settings plus the keys the chart owns
     (paths inside the pod, listen addresses, ports). */}}
{{- define "gridflex.serveSettings" -}}
{{- $s := deepCopy .Values.settings -}}
{{- $_ := set $s "topology" "/etc/gridflex/config/topology.yaml" -}}
{{- $_ := set $s "http_host" "0.0.0.0" -}}
{{- $_ := set $s "http_port" (int .Values.http.port) -}}
{{- if .Values.audit.enabled -}}
{{- $_ := set $s "audit_log" "/var/lib/gridflex/audit.jsonl" -}}
{{- end -}}
{{- if .Values.api.enabled -}}
{{- $api := dict "host" "0.0.0.0" "port" (int .Values.api.port) -}}
{{- if .Values.api.tls.enabled -}}
{{- $_ := set $api "certfile" "/etc/gridflex/tls/tls.crt" -}}
{{- $_ := set $api "keyfile" "/etc/gridflex/tls/tls.key" -}}
{{- if .Values.api.tls.mutual -}}
{{- $_ := set $api "client_ca" "/etc/gridflex/tls/ca.crt" -}}
{{- end -}}
{{- end -}}
{{- $_ := set $s "api" $api -}}
{{- end -}}
{{- toYaml $s -}}
{{- end -}}

{{/* Refuse what the schema cannot see across keys. */}}
{{- define "gridflex.validate" -}}
{{- if eq .Values.mode "serve" -}}
{{- $kafka := .Values.settings.kafka | default dict -}}
{{- if and (gt (int .Values.replicas) 1) (not $kafka.bootstrap) -}}
{{- fail "replicas > 1 needs settings.kafka.bootstrap: the embedded in-process bus serves one replica only" -}}
{{- end -}}
{{- range $k := list "topology" "http_host" "http_port" "audit_log" "api" -}}
{{- if hasKey $.Values.settings $k -}}
{{- fail (printf "settings.%s is set by the chart (see values.yaml: http, api, audit, topology)" $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (or .Values.history.token .Values.history.existingSecret) (not (.Values.settings.history | default dict).url) -}}
{{- fail "history.token/existingSecret needs settings.history.url (where InfluxDB is)" -}}
{{- end -}}
{{- if eq .Values.mode "edge" -}}
{{- if or (not .Values.edge.settings.csms_id) (not .Values.edge.settings.sites) -}}
{{- fail "mode edge needs edge.settings.csms_id and edge.settings.sites (see profiles/edge-example-site.yaml)" -}}
{{- end -}}
{{- range $k := list "stations" "state_dir" -}}
{{- if hasKey $.Values.edge.settings $k -}}
{{- fail (printf "edge.settings.%s is set by the chart (edge.stations go to a Secret; the state lives on the data volume)" $k) -}}
{{- end -}}
{{- end -}}
{{- $tls := .Values.edge.tls -}}
{{- if and $tls.enabled (not $tls.existingSecret) (or (not $tls.cert) (not $tls.key)) -}}
{{- fail "edge.tls.enabled needs edge.tls.existingSecret or both edge.tls.cert and edge.tls.key" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.api.tls.enabled (not .Values.api.tls.existingSecret) (or (not .Values.api.tls.cert) (not .Values.api.tls.key)) -}}
{{- fail "api.tls.enabled needs api.tls.existingSecret or both api.tls.cert and api.tls.key" -}}
{{- end -}}
{{- if and .Values.api.tls.mutual (not .Values.api.tls.existingSecret) (not .Values.api.tls.clientCA) -}}
{{- fail "api.tls.mutual needs api.tls.clientCA (or ca.crt in api.tls.existingSecret)" -}}
{{- end -}}
{{- end -}}

{{/* The settings file of `gridflex edge` (adapters/csms/edge/settings.py): the user's
     settings plus the keys the chart owns (listen address and port, TLS paths, state dir).
     Stations (with passwords) come from the Secret as GRIDFLEX_EDGE__STATIONS. */}}
{{- define "gridflex.edgeSettings" -}}
{{- $s := deepCopy .Values.edge.settings -}}
{{- $ocpp := deepCopy ($s.ocpp | default dict) -}}
{{- $_ := set $ocpp "host" "0.0.0.0" -}}
{{- $_ := set $ocpp "port" (int .Values.edge.ocppPort) -}}
{{- if .Values.edge.tls.enabled -}}
{{- $_ := set $ocpp "certfile" "/etc/gridflex/tls/tls.crt" -}}
{{- $_ := set $ocpp "keyfile" "/etc/gridflex/tls/tls.key" -}}
{{- if .Values.edge.tls.mutual -}}
{{- $_ := set $ocpp "cafile" "/etc/gridflex/tls/ca.crt" -}}
{{- end -}}
{{- end -}}
{{- $_ := set $s "ocpp" $ocpp -}}
{{- $_ := set $s "state_dir" "/var/lib/gridflex/edge" -}}
{{- $_ := set $s "http_host" "0.0.0.0" -}}
{{- $_ := set $s "http_port" (int .Values.http.port) -}}
{{- toYaml $s -}}
{{- end -}}
