// Command kubecheck validates rendered Kubernetes manifests offline, with no cluster and no
// schema download.
//
// Every YAML document is decoded strictly into the Go type the API server itself decodes it
// into: k8s.io/api through client-go's scheme, plus prometheus-operator's monitoring/v1 for
// ServiceMonitor and PrometheusRule. An unknown or misspelt field, a duplicate key, a value of
// the wrong type or an apiVersion/kind the pinned Kubernetes release does not serve is an
// error. On top come the checks a schema cannot express and the API server would only make
// at apply time or never: names and labels are valid, selectors select the workload they
// protect, named ports exist, probes have one handler, requests do not exceed limits,
// volumes and ConfigMap/Secret references resolve within the rendered set, a
// PodDisruptionBudget does not block every eviction.
//
// Usage:
//
//	kubecheck FILE...        (FILE "-" reads standard input)
//
// Output: one line per problem, "error <Kind> <name>: <message>", then one per object
// without a problem, "ok <Kind> <name>". Exit status 1 when any problem was found, 2 on a usage
// or read error.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	sigsyaml "sigs.k8s.io/yaml"
)

type object struct {
	kind, name string
	obj        runtime.Object
}

type workload struct {
	object
	replicas int32
	template corev1.PodTemplateSpec
	claims   []string // StatefulSet volumeClaimTemplates
}

type checker struct {
	objects   []object
	workloads []workload
	problems  int
	failed    map[string]bool // "Kind/name" of objects with a problem
}

func (c *checker) fail(o object, format string, args ...any) {
	c.problems++
	c.failed[o.kind+"/"+o.name] = true
	fmt.Printf("error %s %s: %s\n", o.kind, o.name, fmt.Sprintf(format, args...))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kubecheck FILE... (- for stdin)")
		os.Exit(2)
	}
	sch := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, monitoringv1.AddToScheme} {
		if err := add(sch); err != nil {
			fmt.Fprintln(os.Stderr, "kubecheck:", err)
			os.Exit(2)
		}
	}
	ser := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, sch, sch,
		kjson.SerializerOptions{Yaml: true, Strict: true})
	c := &checker{failed: map[string]bool{}}
	for _, path := range os.Args[1:] {
		if err := c.decodeFile(ser, path); err != nil {
			fmt.Fprintln(os.Stderr, "kubecheck:", err)
			os.Exit(2)
		}
	}
	c.crossCheck()
	for _, o := range c.objects {
		if !c.failed[o.kind+"/"+o.name] {
			fmt.Printf("ok %s %s\n", o.kind, o.name)
		}
	}
	if c.problems > 0 {
		os.Exit(1)
	}
}

func (c *checker) decodeFile(ser runtime.Decoder, path string) error {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	docs := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for i := 0; ; i++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		if asJSON, err := sigsyaml.YAMLToJSON(doc); err == nil && bytes.Equal(bytes.TrimSpace(asJSON), []byte("null")) {
			continue // only comments (e.g. a template rendered empty)
		}
		c.decodeDoc(ser, fmt.Sprintf("%s#%d", path, i), doc)
	}
}

func (c *checker) decodeDoc(ser runtime.Decoder, where string, doc []byte) {
	obj, gvk, err := ser.Decode(doc, nil, nil)
	if err != nil && (obj == nil || !runtime.IsStrictDecodingError(err)) {
		c.fail(object{kind: "?", name: where}, "%v", err)
		return
	}
	o := object{kind: gvk.Kind, obj: obj}
	m, aerr := meta.Accessor(obj)
	if aerr != nil {
		c.fail(object{kind: gvk.Kind, name: where}, "no metadata: %v", aerr)
		return
	}
	o.name = m.GetName()
	if err != nil { // strict decoding: unknown or duplicate fields
		if strict, ok := runtime.AsStrictDecodingError(err); ok {
			for _, e := range strict.Errors() {
				c.fail(o, "%v", e)
			}
		} else {
			c.fail(o, "%v", err)
		}
	}
	c.checkMeta(o, m)
	c.objects = append(c.objects, o)
	switch x := obj.(type) {
	case *appsv1.Deployment:
		c.addWorkload(o, x.Spec.Replicas, x.Spec.Selector, x.Spec.Template, nil)
	case *appsv1.StatefulSet:
		var claims []string
		for _, t := range x.Spec.VolumeClaimTemplates {
			claims = append(claims, t.Name)
		}
		c.addWorkload(o, x.Spec.Replicas, x.Spec.Selector, x.Spec.Template, claims)
	case *appsv1.DaemonSet:
		c.addWorkload(o, nil, x.Spec.Selector, x.Spec.Template, nil)
	case *corev1.ConfigMap:
		for k := range x.Data {
			for _, e := range validation.IsConfigMapKey(k) {
				c.fail(o, "data key %q: %s", k, e)
			}
		}
	case *corev1.Secret:
		for k := range x.StringData {
			for _, e := range validation.IsConfigMapKey(k) {
				c.fail(o, "stringData key %q: %s", k, e)
			}
		}
	}
}

func (c *checker) checkMeta(o object, m metav1.Object) {
	if o.name == "" {
		c.fail(o, "metadata.name is empty")
	} else {
		check := validation.IsDNS1123Subdomain
		if o.kind == "Service" {
			check = validation.IsDNS1035Label
		}
		for _, e := range check(o.name) {
			c.fail(o, "metadata.name: %s", e)
		}
	}
	for _, set := range []map[string]string{m.GetLabels()} {
		for k, v := range set {
			for _, e := range validation.IsQualifiedName(k) {
				c.fail(o, "label key %q: %s", k, e)
			}
			for _, e := range validation.IsValidLabelValue(v) {
				c.fail(o, "label %q value %q: %s", k, v, e)
			}
		}
	}
}

func (c *checker) addWorkload(o object, replicas *int32, sel *metav1.LabelSelector,
	tpl corev1.PodTemplateSpec, claims []string) {
	n := int32(1)
	if replicas != nil {
		n = *replicas
	}
	if sel == nil {
		c.fail(o, "spec.selector is missing")
	} else if s, err := metav1.LabelSelectorAsSelector(sel); err != nil {
		c.fail(o, "spec.selector: %v", err)
	} else if s.Empty() {
		c.fail(o, "spec.selector is empty (selects every pod)")
	} else if !s.Matches(labels.Set(tpl.Labels)) {
		c.fail(o, "spec.selector %s does not match the pod template's labels %v", s, tpl.Labels)
	}
	c.workloads = append(c.workloads, workload{object: o, replicas: n, template: tpl, claims: claims})
}

// ------------------------------------------------------------------------- cross checks

func (c *checker) find(kind, name string) runtime.Object {
	for _, o := range c.objects {
		if o.kind == kind && o.name == name {
			return o.obj
		}
	}
	return nil
}

func (c *checker) selected(sel labels.Selector) []workload {
	var out []workload
	for _, w := range c.workloads {
		if sel.Matches(labels.Set(w.template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func containerPortNames(w workload) map[string]int32 {
	names := map[string]int32{}
	for _, ct := range w.template.Spec.Containers {
		for _, p := range ct.Ports {
			if p.Name != "" {
				names[p.Name] = p.ContainerPort
			}
		}
	}
	return names
}

func (c *checker) crossCheck() {
	for _, w := range c.workloads {
		c.checkPod(w)
	}
	for _, o := range c.objects {
		switch x := o.obj.(type) {
		case *corev1.Service:
			c.checkService(o, x)
		case *appsv1.StatefulSet:
			svc, ok := c.find("Service", x.Spec.ServiceName).(*corev1.Service)
			if x.Spec.ServiceName != "" && !ok {
				c.fail(o, "spec.serviceName %q names no rendered Service", x.Spec.ServiceName)
			} else if ok && svc.Spec.ClusterIP != corev1.ClusterIPNone {
				c.fail(o, "spec.serviceName %q is not a headless Service (clusterIP: None)", svc.Name)
			}
		case *policyv1.PodDisruptionBudget:
			c.checkPDB(o, x)
		case *networkingv1.NetworkPolicy:
			c.checkNetworkPolicy(o, x)
		case *monitoringv1.ServiceMonitor:
			c.checkServiceMonitor(o, x)
		case *autoscalingv2.HorizontalPodAutoscaler:
			if c.find(x.Spec.ScaleTargetRef.Kind, x.Spec.ScaleTargetRef.Name) == nil {
				c.fail(o, "scaleTargetRef %s/%s is not rendered", x.Spec.ScaleTargetRef.Kind, x.Spec.ScaleTargetRef.Name)
			}
		}
	}
}

func (c *checker) checkPod(w workload) {
	spec := w.template.Spec
	if len(spec.Containers) == 0 {
		c.fail(w.object, "the pod template has no containers")
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
		switch {
		case v.ConfigMap != nil:
			c.ref(w.object, "ConfigMap", v.ConfigMap.Name, "", v.ConfigMap.Optional, "volume "+v.Name)
		case v.Secret != nil:
			c.ref(w.object, "Secret", v.Secret.SecretName, "", v.Secret.Optional, "volume "+v.Name)
		}
	}
	for _, name := range w.claims {
		volumes[name] = corev1.Volume{Name: name}
	}
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, ct := range all {
		where := "container " + ct.Name
		for _, e := range validation.IsDNS1123Label(ct.Name) {
			c.fail(w.object, "%s name: %s", where, e)
		}
		if ct.Image == "" {
			c.fail(w.object, "%s has no image", where)
		}
		ports := map[string]bool{}
		for _, p := range ct.Ports {
			if p.Name == "" {
				continue
			}
			for _, e := range validation.IsValidPortName(p.Name) {
				c.fail(w.object, "%s port name %q: %s", where, p.Name, e)
			}
			ports[p.Name] = true
		}
		for kind, pr := range map[string]*corev1.Probe{"livenessProbe": ct.LivenessProbe,
			"readinessProbe": ct.ReadinessProbe, "startupProbe": ct.StartupProbe} {
			c.checkProbe(w.object, where+" "+kind, pr, ports)
		}
		for res, limit := range ct.Resources.Limits {
			if req, ok := ct.Resources.Requests[res]; ok && req.Cmp(limit) > 0 {
				c.fail(w.object, "%s requests %s %s above its limit %s", where, req.String(), res, limit.String())
			}
		}
		for _, m := range ct.VolumeMounts {
			if _, ok := volumes[m.Name]; !ok {
				c.fail(w.object, "%s mounts volume %q that the pod does not have", where, m.Name)
			}
			if !strings.HasPrefix(m.MountPath, "/") {
				c.fail(w.object, "%s mountPath %q is not absolute", where, m.MountPath)
			}
		}
		for _, e := range ct.Env {
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				c.ref(w.object, "ConfigMap", r.Name, r.Key, r.Optional, where+" env "+e.Name)
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				c.ref(w.object, "Secret", r.Name, r.Key, r.Optional, where+" env "+e.Name)
			}
		}
		for _, e := range ct.EnvFrom {
			if e.ConfigMapRef != nil {
				c.ref(w.object, "ConfigMap", e.ConfigMapRef.Name, "", e.ConfigMapRef.Optional, where+" envFrom")
			}
			if e.SecretRef != nil {
				c.ref(w.object, "Secret", e.SecretRef.Name, "", e.SecretRef.Optional, where+" envFrom")
			}
		}
	}
}

func (c *checker) checkProbe(o object, where string, pr *corev1.Probe, ports map[string]bool) {
	if pr == nil {
		return
	}
	h := pr.ProbeHandler
	n := 0
	for _, set := range []bool{h.Exec != nil, h.HTTPGet != nil, h.TCPSocket != nil, h.GRPC != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		c.fail(o, "%s must have exactly one handler, has %d", where, n)
	}
	var port *intstr.IntOrString
	if h.HTTPGet != nil {
		port = &h.HTTPGet.Port
		if !strings.HasPrefix(h.HTTPGet.Path, "/") {
			c.fail(o, "%s path %q must start with /", where, h.HTTPGet.Path)
		}
	} else if h.TCPSocket != nil {
		port = &h.TCPSocket.Port
	}
	if port != nil {
		if port.Type == intstr.String && !ports[port.StrVal] {
			c.fail(o, "%s port %q is not a port of the container", where, port.StrVal)
		} else if port.Type == intstr.Int && (port.IntVal < 1 || port.IntVal > 65535) {
			c.fail(o, "%s port %d is out of range", where, port.IntVal)
		}
	}
	if pr.TimeoutSeconds < 0 || pr.PeriodSeconds < 0 || pr.FailureThreshold < 0 {
		c.fail(o, "%s has a negative timing", where)
	}
}

// ref checks that a ConfigMap or Secret (and its key) a pod uses is in the rendered set.
func (c *checker) ref(o object, kind, name, key string, optional *bool, where string) {
	if optional != nil && *optional {
		return
	}
	obj := c.find(kind, name)
	if obj == nil {
		c.fail(o, "%s references %s %q that is not rendered", where, kind, name)
		return
	}
	if key == "" {
		return
	}
	found := false
	switch x := obj.(type) {
	case *corev1.ConfigMap:
		_, a := x.Data[key]
		_, b := x.BinaryData[key]
		found = a || b
	case *corev1.Secret:
		_, a := x.Data[key]
		_, b := x.StringData[key]
		found = a || b
	}
	if !found {
		c.fail(o, "%s references key %q that %s %q does not have", where, key, kind, name)
	}
}

func (c *checker) checkService(o object, s *corev1.Service) {
	if len(s.Spec.Selector) == 0 {
		return // an external or manually managed Service
	}
	ws := c.selected(labels.SelectorFromSet(s.Spec.Selector))
	if len(ws) == 0 {
		c.fail(o, "selector %v selects no rendered workload", s.Spec.Selector)
	}
	names := map[string]bool{}
	for _, p := range s.Spec.Ports {
		if names[p.Name] {
			c.fail(o, "duplicate port name %q", p.Name)
		}
		names[p.Name] = true
		if p.TargetPort.Type != intstr.String {
			continue
		}
		for _, w := range ws {
			if _, ok := containerPortNames(w)[p.TargetPort.StrVal]; !ok {
				c.fail(o, "targetPort %q is not a container port of %s %s", p.TargetPort.StrVal, w.kind, w.name)
			}
		}
	}
}

func (c *checker) checkPDB(o object, p *policyv1.PodDisruptionBudget) {
	if (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil) {
		c.fail(o, "set exactly one of minAvailable and maxUnavailable")
	}
	if p.Spec.Selector == nil {
		c.fail(o, "spec.selector is missing")
		return
	}
	sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
	if err != nil {
		c.fail(o, "spec.selector: %v", err)
		return
	}
	ws := c.selected(sel)
	if len(ws) == 0 {
		c.fail(o, "selector %s selects no rendered workload", sel)
	}
	for _, w := range ws {
		if m := p.Spec.MinAvailable; m != nil && m.Type == intstr.Int && m.IntVal >= w.replicas {
			c.fail(o, "minAvailable %d with %d replicas of %s %s blocks every voluntary eviction", m.IntVal, w.replicas, w.kind, w.name)
		}
		if m := p.Spec.MaxUnavailable; m != nil && ((m.Type == intstr.Int && m.IntVal == 0) || (m.Type == intstr.String && m.StrVal == "0%")) {
			c.fail(o, "maxUnavailable 0 blocks every voluntary eviction of %s %s", w.kind, w.name)
		}
	}
}

func (c *checker) checkNetworkPolicy(o object, n *networkingv1.NetworkPolicy) {
	sel, err := metav1.LabelSelectorAsSelector(&n.Spec.PodSelector)
	if err != nil {
		c.fail(o, "podSelector: %v", err)
		return
	}
	ws := c.selected(sel)
	if len(ws) == 0 {
		c.fail(o, "podSelector %s selects no rendered workload", sel)
	}
	for _, rule := range n.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port == nil || p.Port.Type != intstr.String {
				continue
			}
			for _, w := range ws {
				if _, ok := containerPortNames(w)[p.Port.StrVal]; !ok {
					c.fail(o, "ingress port %q is not a container port of %s %s", p.Port.StrVal, w.kind, w.name)
				}
			}
		}
	}
}

func (c *checker) checkServiceMonitor(o object, m *monitoringv1.ServiceMonitor) {
	sel, err := metav1.LabelSelectorAsSelector(&m.Spec.Selector)
	if err != nil {
		c.fail(o, "selector: %v", err)
		return
	}
	var svcs []*corev1.Service
	for _, x := range c.objects {
		if s, ok := x.obj.(*corev1.Service); ok && sel.Matches(labels.Set(s.Labels)) {
			svcs = append(svcs, s)
		}
	}
	if len(svcs) == 0 {
		c.fail(o, "selector %s selects no rendered Service", sel)
	}
	for _, ep := range m.Spec.Endpoints {
		if ep.Port == "" {
			continue
		}
		for _, s := range svcs {
			var names []string
			for _, p := range s.Spec.Ports {
				names = append(names, p.Name)
			}
			sort.Strings(names)
			i := sort.SearchStrings(names, ep.Port)
			if i == len(names) || names[i] != ep.Port {
				c.fail(o, "endpoint port %q is not a port of Service %s (%v)", ep.Port, s.Name, names)
			}
		}
	}
}
