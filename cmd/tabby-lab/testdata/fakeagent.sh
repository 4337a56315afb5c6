#!/bin/sh
# A stand-in for the tabby-node agent in tabby-lab's tests. It takes the agent's flags,
# registers its Node with the tabbyctl at $FAKE_AGENT_TABBYCTL and sleeps until killed (at
# most 20 minutes, so a leaked one goes away by itself). FAKE_AGENT=die makes it fail at
# once, FAKE_AGENT=mute makes it run without ever registering.
while [ $# -gt 0 ]; do
	case $1 in
	--node-name) name=$2; shift ;;
	--etcd-endpoints) endpoints=$2; shift ;;
	esac
	shift
done
echo "fake agent $name: starting, etcd $endpoints, netns $(readlink /proc/self/ns/net)"
case $FAKE_AGENT in
die)
	echo "fake agent $name: cannot start: boom" >&2
	exit 1 ;;
mute)
	exec sleep 1200 ;;
esac
printf 'apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: %s\n' "$name" |
	"$FAKE_AGENT_TABBYCTL" --etcd-endpoints "$endpoints" apply -f - || exit 1
echo "fake agent $name: registered"
exec sleep 1200
