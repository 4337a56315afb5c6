package datastore

import "google.golang.org/grpc"

// WithInterceptor is cfg whose client runs every unary request through i: tests inject
// faults with it.
func WithInterceptor(cfg Config, i grpc.UnaryClientInterceptor) Config {
	cfg.interceptor = i
	return cfg
}
