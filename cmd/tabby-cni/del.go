package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/ipam"
)

// maxDeleteAttempts bounds how often DEL re-reads an endpoint that changed between its
// read and its compare-and-swap delete.
const maxDeleteAttempts = 5

// cmdDel detaches the container: its endpoint (only if it is still this container's: a
// newer sandbox of the same pod may own it), its interface (the host end goes with it) and
// its addresses. Whatever is already gone is not an error, so DEL can be repeated, and
// runs for a container ADD never finished. It holds the container's lock (lockContainer),
// and removes the lock file once the container is detached. The endpoint goes first, so that no agent
// routes to addresses IPAM may hand out again.
func cmdDel(ctx context.Context, inv *invocation) error {
	id, err := newWorkloadID(inv.conf, inv.args.ContainerID, inv.args.IfName, inv.args.Args)
	if err != nil {
		return err
	}
	lock, err := lockContainer(ctx, lockDir, id.ContainerID)
	if err != nil {
		return err
	}
	done := false
	defer func() { lock.unlock(done) }()
	ds, err := inv.connect(ctx)
	if err != nil {
		return err
	}
	defer ds.Close()
	log := inv.log.With("endpoint", id.Namespace+"/"+id.Endpoint)
	if err := deleteEndpoint(ctx, ds, id.Namespace, id.Endpoint, id.ContainerID, log); err != nil {
		return err
	}
	if inv.args.Netns != "" {
		att := &attachment{NetNS: inv.args.Netns, IfName: id.IfName}
		if err := att.remove(); err != nil {
			return err
		}
	}
	released, err := ipam.New(ds, inv.log).ReleaseByHandle(ctx, id.Handle)
	if err != nil {
		return fmt.Errorf("release the addresses of handle %s: %w", id.Handle, err)
	}
	log.Info("detached", "released", released)
	done = true
	return nil
}

// deleteEndpoint deletes an endpoint if its container ID is containerID, compare-and-swap
// on the revision read; an endpoint that is gone or another container's is left alone.
func deleteEndpoint(ctx context.Context, ds *datastore.Client, namespace, name, containerID string, log *slog.Logger) error {
	for range maxDeleteAttempts {
		w, err := getEndpoint(ctx, ds, namespace, name)
		switch {
		case err != nil:
			return fmt.Errorf("read workload endpoint %s/%s: %w", namespace, name, err)
		case w == nil:
			log.Debug("no workload endpoint to delete")
			return nil
		case w.Spec.ContainerID != containerID:
			log.Info("leaving the workload endpoint to the container that owns it now", "owner", w.Spec.ContainerID)
			return nil
		}
		_, err = ds.Delete(ctx, wepKind, namespace, name, w.ResourceVersion)
		switch {
		case err == nil, errors.Is(err, datastore.ErrNotFound):
			return nil
		case !errors.Is(err, datastore.ErrConflict):
			return fmt.Errorf("delete workload endpoint %s/%s: %w", namespace, name, err)
		}
		log.Debug("the workload endpoint changed while deleting it; reading it again")
	}
	return fmt.Errorf("delete workload endpoint %s/%s: %w: it kept changing (%d attempts)", namespace, name, datastore.ErrConflict, maxDeleteAttempts)
}
