"""Multi-node jobs: the rendezvous store and the collectives' ports are reachable only
from the gang's nodes (docs/security.md, "Multi-node jobs"; docs/deployment.md,
"Multi-node network").

One machine plays three: network namespaces joined by a bridge, two as the gang's GPU
nodes and a third as an outsider. Node 0 runs a real torch ``TCPStore`` at the store's
port and a listener on an ephemeral port (gloo's and NCCL's kind), behind the ruleset
``scripts/gang-firewall.sh`` prints. Without it the outsider connects to both (the test
checks that first); with it, only the other node does. Needs root (CI runs as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from worker import gang

ROOT = Path(__file__).resolve().parents[2]
NEEDS = ("ip", "nft")
if (os.getuid() != 0 or not all(map(shutil.which, NEEDS))) and not os.environ.get("CI"):
    pytest.skip("needs root, iproute2 and nftables", allow_module_level=True)

NODES = {"gadn0": "10.77.0.1", "gadn1": "10.77.0.2", "gadout": "10.77.0.3"}
BRIDGE = "gadbr0"
STORE_PORT, EPHEMERAL_PORT = 29600, 41234

SERVER = f"""
import socket, sys, time
from datetime import timedelta
import torch.distributed as dist
store = dist.TCPStore("0.0.0.0", {STORE_PORT}, 2, True, timedelta(seconds=60), wait_for_workers=False)
other = socket.socket(); other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
other.bind(("0.0.0.0", {EPHEMERAL_PORT})); other.listen()
print("listening", flush=True)
time.sleep(120)
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@pytest.fixture
def three_nodes():
    def clean():
        for name in NODES:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)

    clean()
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "link", "set", BRIDGE, "up")
    for i, (name, addr) in enumerate(NODES.items()):
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", f"gadv{i}", "type", "veth", "peer", "name", "eth0", "netns", name)
        sh("ip", "link", "set", f"gadv{i}", "master", BRIDGE, "up")
        sh("ip", "-n", name, "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "link", "set", "lo", "up")
    yield
    clean()


def can_connect(node: str, port: int) -> bool:
    code = (
        f"import socket; s = socket.socket(); s.settimeout(2); "
        f"print(s.connect_ex(({NODES['gadn0']!r}, {port})))"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", node, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip() == "0"


def test_only_the_gangs_nodes_reach_the_store_and_the_collectives(three_nodes):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(
        ["ip", "netns", "exec", "gadn0", sys.executable, "-c", SERVER],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout.readline().strip() == "listening"
        # With no firewall, anyone on the network reaches both: the hole.
        assert can_connect("gadout", STORE_PORT) and can_connect("gadout", EPHEMERAL_PORT)
        rules = subprocess.run(
            [str(ROOT / "scripts" / "gang-firewall.sh"), "eth0", NODES["gadn0"], NODES["gadn1"]],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        subprocess.run(["ip", "netns", "exec", "gadn0", "nft", "-f", "-"], input=rules,
                       check=True, capture_output=True, text=True)  # fmt: skip
        assert can_connect("gadn1", STORE_PORT) and can_connect("gadn1", EPHEMERAL_PORT)
        assert not can_connect("gadout", STORE_PORT)
        assert not can_connect("gadout", EPHEMERAL_PORT)
        # Applied twice (the node set changed): replaced, not doubled.
        subprocess.run(["ip", "netns", "exec", "gadn0", "nft", "-f", "-"], input=rules,
                       check=True, capture_output=True, text=True)  # fmt: skip
        assert can_connect("gadn1", STORE_PORT) and not can_connect("gadout", STORE_PORT)
    finally:
        server.kill()
        server.wait()


def test_the_firewall_script_refuses_what_is_not_an_address():
    done = subprocess.run(
        [str(ROOT / "scripts" / "gang-firewall.sh"), "eth0", "10.0.0.1; drop table"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "not an IPv4 address" in done.stderr


def test_a_nodes_address_is_its_network_one_not_debians_127_0_1_1(three_nodes, settings):
    """Debian's /etc/hosts gives gethostbyname(gethostname()) 127.0.1.1, which the
    other nodes would take for themselves. The default is the address of the interface
    NCCL/gloo are pinned to, else the one the broker is reached from; a pinned interface
    that does not exist, or does not carry GAD_NODE_ADDR, refuses the gang."""
    code = (
        "import os, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'webapp.settings'); "
        "django.setup(); from worker import gang; print(gang.node_address())"
    )

    def address(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", "gadn1", sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "DJANGO_DEBUG": "1", **env},
        )

    broker = f"redis://{NODES['gadn0']}:6379/0"  # the shared services, on the cluster network
    done = address(CELERY_BROKER_URL=broker)
    assert done.stdout.strip() == NODES["gadn1"], done.stderr[-2000:]
    done = address(CELERY_BROKER_URL=broker, NCCL_SOCKET_IFNAME="eth0")
    assert done.stdout.strip() == NODES["gadn1"], done.stderr[-2000:]
    done = address(NCCL_SOCKET_IFNAME="ib0")
    assert done.returncode != 0 and "no interface 'ib0'" in done.stderr
    done = address(GLOO_SOCKET_IFNAME="eth0", GAD_NODE_ADDR="10.9.9.9")
    assert done.returncode != 0 and "GAD_NODE_ADDR=10.9.9.9 is not on the interface" in done.stderr
    # And on this machine, whatever its /etc/hosts says: never 127.0.1.1.
    assert gang.outward_address() != "127.0.1.1"
