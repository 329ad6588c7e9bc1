// Command argocd-health evaluates Argo CD health checks with Argo CD's own Lua code.
//
// It walks a resource_customizations tree (<group>/<Kind>/health.lua with a health_test.yaml beside it, the
// layout of Argo CD's repository) and evaluates every test case twice through the controller's path
// (util/lua ResourceHealthOverrides.GetResourceHealth, standard libraries closed as in production):
// once with the health.lua file as the override, once with the override that Argo CD's settings manager
// reads from the given argocd-cm ConfigMap (resource.customizations.health.<group>_<Kind> keys).
// It prints one JSON object per case; the caller compares them with the expected healthStatus.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	argolua "github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
)

const namespace = "argocd"

type healthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type testFile struct {
	Tests []struct {
		InputPath    string       `json:"inputPath"`
		HealthStatus healthStatus `json:"healthStatus"`
	} `json:"tests"`
}

type result struct {
	Key       string       `json:"key"`
	InputPath string       `json:"inputPath"`
	Source    string       `json:"source"`
	Expected  healthStatus `json:"expected"`
	Actual    healthStatus `json:"actual"`
	Error     string       `json:"error,omitempty"`
}

func main() {
	root := flag.String("customizations", "", "resource_customizations directory (<group>/<Kind>/health.lua)")
	configMap := flag.String("configmap", "", "argocd-cm ConfigMap YAML whose resource.customizations.health.* keys are checked too")
	flag.Parse()
	if *root == "" || *configMap == "" {
		fmt.Fprintln(os.Stderr, "usage: argocd-health -customizations DIR -configmap argocd-cm.yaml")
		os.Exit(2)
	}
	results, err := run(*root, *configMap)
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		os.Exit(1)
	}
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	if err := out.Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		os.Exit(1)
	}
}

func run(root, configMapPath string) ([]result, error) {
	cmOverrides, err := configMapOverrides(configMapPath)
	if err != nil {
		return nil, err
	}
	var tests []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "health_test.yaml" {
			tests = append(tests, path)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(tests) == 0 {
		return nil, fmt.Errorf("no <group>/<Kind>/health_test.yaml under %s", root)
	}
	sort.Strings(tests)
	results := []result{}
	for _, testPath := range tests {
		dir := filepath.Dir(testPath)
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			return nil, err
		}
		key := filepath.ToSlash(rel) // <group>/<Kind>: the override key Argo CD looks health scripts up by
		script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
		if err != nil {
			return nil, err
		}
		var cases testFile
		if err := readYAML(testPath, &cases); err != nil {
			return nil, err
		}
		fileOverrides := argolua.ResourceHealthOverrides{key: appv1.ResourceOverride{HealthLua: string(script)}}
		for _, tc := range cases.Tests {
			obj := &unstructured.Unstructured{}
			if err := readYAML(filepath.Join(dir, tc.InputPath), &obj.Object); err != nil {
				return nil, err
			}
			for _, src := range []struct {
				name      string
				overrides argolua.ResourceHealthOverrides
			}{{"health.lua", fileOverrides}, {"argocd-cm", cmOverrides}} {
				r := result{Key: key, InputPath: tc.InputPath, Source: src.name, Expected: tc.HealthStatus}
				status, err := src.overrides.GetResourceHealth(obj)
				switch {
				case err != nil:
					r.Error = err.Error()
				case status == nil:
					r.Error = "no health script for " + key
				default:
					r.Actual = healthStatus{Status: string(status.Status), Message: status.Message}
				}
				results = append(results, r)
			}
		}
	}
	return results, nil
}

// configMapOverrides reads the ConfigMap as Argo CD's settings manager does: from the API (a fake clientset
// here), split resource.customizations.* keys and the resource.customizations block alike.
func configMapOverrides(path string) (argolua.ResourceHealthOverrides, error) {
	cm := &corev1.ConfigMap{}
	if err := readYAML(path, cm); err != nil {
		return nil, err
	}
	if cm.Name != "argocd-cm" {
		return nil, fmt.Errorf("%s: metadata.name is %q; Argo CD reads only argocd-cm", path, cm.Name)
	}
	cm.Namespace = namespace
	// The settings manager's informer only sees ConfigMaps labelled as part of Argo CD.
	if cm.Labels["app.kubernetes.io/part-of"] != "argocd" {
		return nil, fmt.Errorf("%s: metadata.labels must carry app.kubernetes.io/part-of: argocd, or Argo CD does not read it", path)
	}
	secret := &corev1.Secret{}
	secret.Name, secret.Namespace = "argocd-secret", namespace
	secret.Labels = map[string]string{"app.kubernetes.io/part-of": "argocd"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	overrides, err := settings.NewSettingsManager(ctx, fake.NewClientset(cm, secret), namespace).GetResourceOverrides()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return overrides, nil
}

func readYAML(path string, into any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		return errors.Join(fmt.Errorf("%s: not YAML", path), err)
	}
	return nil
}
