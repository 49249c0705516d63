package main

import (
	"context"
	"errors"

	dto "github.com/prometheus/client_model/go"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/petrel-vmm/petrel/core/fleet"
)

// statsless adds to the fleet provider the kubelet statistics endpoints,
// which it does not serve: Petrel's own metrics plugins export VM
// statistics.
type statsless struct{ *fleet.Provider }

// GetStatsSummary is not served.
func (statsless) GetStatsSummary(context.Context) (*statsv1alpha1.Summary, error) {
	return nil, errors.New("stats summary: use Petrel's metrics plugins (petrel stats)")
}

// GetMetricsResource is not served.
func (statsless) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) {
	return nil, errors.New("metrics resource: use Petrel's metrics plugins (petrel stats)")
}
