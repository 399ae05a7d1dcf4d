"""The planning server (`plan.py serve`) against a real server process over real sockets: the sim
rig driven through the client gives the in-process actions, every bad input gets an error reply
and leaves the session usable, sessions stay isolated (also from a client dropping mid-plan),
nothing is reachable without the token beyond 127.0.0.1 (the default), a killed server is
reported and the client reconnects once it is back.

The server process listens on every interface (0.0.0.0) with a token, as on a lab network; the
clients here find the token in DEXWM_TOKEN, as users do."""

import os
import secrets
import socket
import threading
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from _plan import tiny_model  # noqa: E402
from _serve import PLAN_CONFIG, Server  # noqa: E402
from dexwm_client import ConnectionLost, PlanningClient, ServerError, packb, unpackb  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from dexwm.control import run_episode  # noqa: E402
from dexwm.control.episodes import load_policies  # noqa: E402
from dexwm.control.remote import RemotePolicy  # noqa: E402
from dexwm.data.actions import ACTION_DIM, HAND_DIMS  # noqa: E402
from dexwm.serve import PlanServer, Session, serve  # noqa: E402
from dexwm.serve.session import FifoLock  # noqa: E402

EPISODES = [("reach", 0), ("grasp", 1)]  # grasp: the orientation term needs the goal joints
STEPS = 4  # two plans per episode: the second one warm-starts from the first


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    wm = tiny_model()
    # action statistics at a trained model's scale (keypoint steps of about 1 cm): with the
    # unfitted std of 1 the plans would change the predicted features only at float rounding
    std = torch.ones(ACTION_DIM)
    std[:HAND_DIMS] = 0.01
    wm.action_norm.set_stats(torch.zeros(ACTION_DIM), std)
    wm.save(folder / "tiny.pt")
    (folder / "plan.yaml").write_text(PLAN_CONFIG)
    return folder / "tiny.pt", folder / "plan.yaml"


@pytest.fixture(scope="module")
def token():
    """The server's token, in this process's DEXWM_TOKEN while the module runs."""
    value, before = secrets.token_urlsafe(24), os.environ.get("DEXWM_TOKEN")
    os.environ["DEXWM_TOKEN"] = value
    yield value
    if before is None:
        del os.environ["DEXWM_TOKEN"]
    else:
        os.environ["DEXWM_TOKEN"] = before


def start_server(files, token, port=0) -> Server:
    """Every interface, the token, this process's torch threads (same arithmetic as the
    in-process planner here), a 4 MiB message limit; `url` on 127.0.0.1."""
    s = Server(
        *files,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--threads",
        str(torch.get_num_threads()),
        "--max_message_mb",
        "4",
        token=token,
    )
    s.url = f"ws://127.0.0.1:{port_of(s.wait())}"
    return s


@pytest.fixture(scope="module")
def server(files, token):
    holder = {"server": start_server(files, token)}
    yield holder  # a test may replace the process (kill and restart)
    holder["server"].stop()


@pytest.fixture(scope="module")
def url(server):
    return server["server"].url


@pytest.fixture(scope="module")
def served(files):
    """The policy the server serves, in this process."""
    policy = load_policies(files[1])[1]
    assert policy.name == "small_cem"
    policy.setup(str(files[0]))
    return policy


@pytest.fixture
def template(files):
    """The served policy as the server holds it: set up, never run (sessions fork it)."""
    policy = load_policies(files[1])[1]
    policy.setup(str(files[0]))
    return policy


@pytest.fixture(scope="module")
def frames(rig):
    """A goal image and an observation of a reach episode: (goal, image, commanded joints)."""
    obs = rig.reset("reach", 0)
    return rig.goal_image("reach", 0), obs["image"], obs["commanded"]


def external_ip() -> str | None:
    """This machine's address on its default route (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def raw_connect(url: str):
    """A bare websocket with the token: sends whatever it is given."""
    auth = {"Authorization": f"Bearer {os.environ['DEXWM_TOKEN']}"}
    return connect(url, additional_headers=auth, compression=None, max_size=None, proxy=None)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def episode(rig, policy, task, index):
    seen = []
    record, _ = run_episode(
        rig, policy, task, index, max_steps=STEPS, stop_on_success=False, observations=seen
    )
    return record, np.stack([o["commanded"] for o in seen])


def session(url, goal, image, joints, seed=0, calls=3, replies=None, **reset):
    """A reach session of `calls` plans from the same observation -> their targets; the full
    replies are appended to `replies` when given."""
    with PlanningClient(url) as c:
        c.reset(goal, seed=seed, task="reach", **reset)
        out = []
        for _ in range(calls):
            out.append(c.act({"image": image, "joints": joints}))
            if replies is not None:
                replies.append(c.last)
        return out


# ---- what the server offers ----------------------------------------------------------------


def test_metadata_describes_the_served_planner_robot_and_camera(url, served, rig):
    with PlanningClient(url) as c:
        m = c.metadata
    assert m["protocol"] == "dexwm-plan/1"
    assert m["policy"]["name"] == "small_cem"  # the config's first MPC policy
    assert m["policy"]["planner"] == repr(served.planner)
    assert (m["execute"], m["policy"]["horizon"], m["control_hz"]) == (2, 3, 10.0)
    assert m["joint_names"] == list(rig.info.joints) and m["n_arm"] == 7
    np.testing.assert_array_equal(m["joint_limits"], rig.joint_limits)
    assert m["image_size"] == [128, 128] and m["model"]["encoder_input_size"] == [128, 128]
    np.testing.assert_array_equal(m["camera"]["intrinsics"], rig.K(128))
    np.testing.assert_array_equal(m["camera"]["extrinsics"]["position"], rig.camera.pos)
    np.testing.assert_array_equal(m["camera"]["extrinsics"]["rotation"], rig.camera.R)
    assert m["limits"] == {"max_image_side": 1024, "max_message_bytes": 4 << 20, "max_sessions": 8}
    assert m["auth"] is True


def test_sim_through_the_server_gives_the_in_process_actions(url, served, rig):
    """Same seeds, same episodes: the joint targets commanded at every step are identical, so is
    everything measured (the grasp episode uses the orientation term: the goal joints travel).
    With the rig's calibration sent explicitly, as a real robot's client does: the same."""
    remote = RemotePolicy(url)
    calibrated = RemotePolicy(url, name="calibrated", calibration=True)
    try:
        for task, index in EPISODES:
            rec, q = episode(rig, served, task, index)
            assert np.abs(q[-1] - q[0]).max() > 1e-3  # the planner moved the robot
            for policy in (remote, calibrated) if task == "grasp" else (remote,):
                rec_s, q_s = episode(rig, policy, task, index)
                np.testing.assert_array_equal(q_s, q)
                for key in (
                    "success_dexwm",
                    "success_strict",
                    "final_distance",
                    "final_lift",
                    "steps",
                    "calls",
                    "evaluations",
                    "iterations",
                ):
                    assert rec_s[key] == rec[key], (task, key)
    finally:
        remote.close()
        calibrated.close()


def test_plan_py_eval_through_the_server_matches_in_process(url, served, rig, files, tmp_path):
    import plan

    out = tmp_path / "server"
    via = plan.main(
        [
            "eval",
            "--config",
            str(files[1]),
            "--server",
            url,
            "--tasks",
            "[place]",
            "--episodes",
            "[3]",
            "--max_steps",
            "4",
            "--video",
            "false",
            "--out",
            str(out),
        ]
    )
    local, _ = run_episode(rig, served, "place", 3, max_steps=4)
    (record,) = via["episodes"]
    assert record["policy"] == "server" and (out / "summary.json").exists()
    for key in ("success_dexwm", "success_strict", "final_distance", "steps", "evaluations"):
        assert record[key] == local[key], key


# ---- robustness ----------------------------------------------------------------------------


def test_every_bad_input_gets_an_error_naming_it_and_the_session_goes_on(url, frames):
    goal, image, q = frames
    good = {"type": "act", "image": image, "joints": q}
    big = np.zeros((1100, 1100, 3), np.uint8)  # 3.6 MB: under the 4 MiB transport limit
    bad_acts = [
        ({"image": image.astype(np.float32)}, "bad_dtype", "image must be uint8"),
        ({"image": image[..., :2].copy()}, "bad_shape", "image must be (H, W, 3)"),
        ({"image": image[0].copy()}, "bad_shape", "image must be (H, W, 3)"),
        ({"image": image[:64, :64].copy()}, "bad_shape", "the goal image was"),
        ({"image": big}, "too_large", "at most 1024 px"),
        ({"image": "a picture"}, "bad_field", "image must be an array"),
        ({"joints": q[:5]}, "bad_shape", "joints must have shape [23]"),
        ({"joints": q.astype(np.int64)}, "bad_dtype", "joints must be float"),
        ({"joints": np.where(np.arange(23) == 3, np.nan, q)}, "not_finite", "joints contains NaN"),
        ({"joints": np.full(23, np.inf)}, "not_finite", "joints contains NaN or inf"),
        ({"joints": ["a"] * 23}, "bad_field", "joints must be a float array"),
        ({"extra": 1}, "bad_field", "unknown field(s) ['extra']"),
    ]
    bad_resets = [
        ({"goal_image": goal.astype(np.float64)}, "bad_dtype", "goal_image must be uint8"),
        ({"intrinsics": np.eye(2)}, "bad_shape", "intrinsics must have shape [3, 3]"),
        ({"intrinsics": -np.eye(3)}, "bad_value", "fx, fy > 0"),
        (
            {"extrinsics": {"position": np.zeros(3), "rotation": 2 * np.eye(3)}},
            "bad_value",
            "rotation matrix",
        ),
        ({"extrinsics": {"position": np.zeros(3)}}, "bad_field", "extrinsics must be a map"),
        ({"seed": -1}, "bad_value", "seed must be an int"),
        ({"goal_joints": np.zeros(4)}, "bad_shape", "goal_joints must have shape [23]"),
        ({"task": "grasp"}, "missing_field", "orientation cost applies to task 'grasp'"),
    ]
    nd = {b"__ndarray__": True, b"dtype": "<f8", b"shape": [3], b"data": b"\x00" * 8}
    raw = [
        (b"\xc1\x00", "malformed", "not a msgpack message"),
        (packb([1, 2]), "malformed", "a map with a string 'type'"),
        (packb({"no": "type"}), "malformed", "a map with a string 'type'"),
        (packb({"type": "fly"}), "unknown_type", "unknown type 'fly'"),
        (packb({"type": "act", "joints": nd}), "malformed", "needs 24 bytes, got 8"),
        (
            packb({"type": "act", "joints": {**nd, b"dtype": "|O"}}),
            "malformed",
            "dtype object is not allowed",
        ),
        ("a text frame", "malformed", "binary frames"),
    ]
    with PlanningClient(url) as c:
        with pytest.raises(ServerError, match="no_goal: send reset"):
            c.request(good)
        c.reset(goal, seed=1, task="reach")
        for field, code, text in bad_acts:
            with pytest.raises(ServerError) as e:
                c.request({**good, **field})
            assert e.value.code == code and text in e.value.message, (field.keys(), e.value)
        for data, code, text in raw:
            c._conn.send(data)
            reply = unpackb(c._conn.recv(timeout=60))
            assert reply["type"] == "error" and reply["code"] == code, reply
            assert text in reply["message"], reply
        for field, code, text in bad_resets:  # a refused reset keeps the previous goal
            with pytest.raises(ServerError) as e:
                c.request({"type": "reset", "goal_image": goal, "task": "reach", **field})
            assert e.value.code == code and text in e.value.message, (field.keys(), e.value)
        got = [c.act({"image": image, "joints": q}) for _ in range(2)]
    # the bad inputs left nothing behind: a clean session gives the same plans
    for a, b in zip(got, session(url, goal, image, q, seed=1, calls=2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_oversized_messages_are_refused_without_harm(url, frames):
    goal, image, q = frames
    huge = np.zeros((1300, 1300, 3), np.uint8)  # 5 MB: over the 4 MiB message limit
    with PlanningClient(url) as c:
        c.reset(goal, task="reach")
        with pytest.raises(ValueError, match="exceeds the server's limit"):  # caught client-side
            c.act({"image": huge, "joints": q})
        assert c.act({"image": image, "joints": q}).shape == (2, 23)
    with raw_connect(url) as raw:
        unpackb(raw.recv(timeout=60))  # metadata
        raw.send(packb({"type": "act", "image": huge, "joints": q}))  # the websocket layer closes
        with pytest.raises(ConnectionClosed) as e:
            raw.recv(timeout=60)
        assert e.value.rcvd.code == 1009  # message too big
    assert session(url, goal, image, q, calls=1)[0].shape == (2, 23)  # still serving


def test_sessions_are_isolated_even_from_a_client_dropping_mid_plan(url, frames):
    """Four clients at once plan exactly what one client alone plans; a fifth leaves while its
    plans are queued or running; the server serves on and forgets the dropped session."""
    goal, image, q = frames
    alone = session(url, goal, image, q, seed=7)
    results, errors = {}, []

    def client(k):
        try:
            results[k] = session(url, goal, image, q, seed=7)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    def dropper():
        with raw_connect(url) as raw:
            raw.recv(timeout=60)
            raw.send(packb({"type": "reset", "goal_image": goal, "seed": 3, "task": "reach"}))
            for _ in range(3):
                raw.send(packb({"type": "act", "image": image, "joints": q}))
            raw.recv(timeout=60)  # ready: its plans are now queued or running
            raw.socket.shutdown(socket.SHUT_RDWR)  # drop, no closing handshake

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=dropper))
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for k in range(4):
        for a, b in zip(results[k], alone, strict=True):
            np.testing.assert_array_equal(a, b)
    with PlanningClient(url) as c:  # the dropped session is gone once its plan ended
        deadline = time.monotonic() + 120
        while c.request({"type": "metadata"})["sessions"] > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.request({"type": "metadata"})["sessions"] == 1


def test_client_calibration_is_used(url, template, frames, rig):
    """The sim camera given explicitly plans like the default; a rotated camera changes the
    keypoint motions the model is conditioned on, hence the plans. The session's FK puts the
    hand keypoints in the client's camera frame (position and rotation)."""
    goal, image, q = frames
    K, pos, R = rig.K(128), rig.camera.pos, rig.camera.R
    c, s = np.cos(0.4), np.sin(0.4)
    turned = R @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # about the optical axis
    default, same, other = [], [], []
    session(url, goal, image, q, calls=2, replies=default)
    session(
        url,
        goal,
        image,
        q,
        calls=2,
        replies=same,
        intrinsics=K,
        extrinsics={"position": pos, "rotation": R},
    )
    session(
        url,
        goal,
        image,
        q,
        calls=2,
        replies=other,
        intrinsics=K,
        extrinsics={"position": pos, "rotation": turned},
    )
    for a, b in zip(default, same, strict=True):
        np.testing.assert_array_equal(a["targets"], b["targets"])
        assert a["costs"] == b["costs"]
    assert any(a["costs"] != b["costs"] for a, b in zip(default, other, strict=True))

    local = Session(template, rig, FifoLock(), max_side=1024)
    moved = pos + np.array([0.1, -0.2, 0.3])
    ready = local.reset(
        {
            "type": "reset",
            "goal_image": goal,
            "task": "reach",
            "extrinsics": {"position": moved, "rotation": turned},
        }
    )
    assert ready["camera"] == "client"
    world = rig.commanded(q)["keypoints"]  # (21, 3) world
    got = local.policy.space.keypoints(torch.tensor(q, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(got, (world - moved) @ turned, atol=1e-5)


def test_nothing_is_reachable_without_the_token(url, token):
    port = port_of(url)
    ip = external_ip()
    for host in ["127.0.0.1"] + ([ip] if ip else []):
        for wrong in ("", token[:-1] + "x", "Bearer " + token, token + token):
            with pytest.raises(ConnectionError, match="HTTP 401 a valid token is required"):
                PlanningClient(f"ws://{host}:{port}", token=wrong)
        with PlanningClient(f"ws://{host}:{port}", token=token) as c:
            assert c.metadata["auth"] is True


def test_by_default_the_server_listens_on_this_machine_only(template, rig, files, monkeypatch):
    """The command's default host is 127.0.0.1 (unreachable from another interface); any other
    host without a token (or with a short one) is refused before anything is loaded."""
    import inspect

    host = inspect.signature(serve).parameters["host"].default
    assert host == "127.0.0.1"
    server = PlanServer(template, rig, host, 0, None, 2, 1024, 1 << 20)
    ready = threading.Event()
    thread = threading.Thread(target=server.run, args=(lambda u: ready.set(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(60)
        port = server._server.socket.getsockname()[1]
        with PlanningClient(f"ws://127.0.0.1:{port}", token="") as c:
            assert c.metadata["auth"] is False
        ip = external_ip()
        if ip is not None:
            with pytest.raises(ConnectionError, match="cannot reach"):
                PlanningClient(f"ws://{ip}:{port}", token="")
    finally:
        server.shutdown()
        thread.join(30)
    monkeypatch.delenv("DEXWM_TOKEN")
    for h in ("0.0.0.0", "", "192.168.1.7", "myhost"):
        with pytest.raises(ValueError, match="set a token in DEXWM_TOKEN"):
            serve(str(files[0]), str(files[1]), host=h)
    monkeypatch.setenv("DEXWM_TOKEN", "short")
    with pytest.raises(ValueError, match="at least 16 characters"):
        serve(str(files[0]), str(files[1]), host="0.0.0.0")


def test_plans_are_granted_in_arrival_order():
    lock, order = FifoLock(), []

    def plan(k):
        with lock:
            order.append(k)

    threads = []
    with lock:  # a plan is running; five more ask, one after the other
        for k in range(5):
            threads.append(threading.Thread(target=plan, args=(k,)))
            threads[-1].start()
            while lock._next != k + 2:  # its ticket is taken
                time.sleep(0.001)
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3, 4]


def test_the_first_mpc_policy_is_served_unwrapped_and_never_a_simulator_one():
    from dexwm.control import MPCPolicy
    from dexwm.control.baselines import HoldPolicy
    from dexwm.serve.server import served_policy

    class Wrapper(HoldPolicy):  # e.g. staged goals around a planner
        def __init__(self, policy):
            super().__init__()
            self.policy = policy

    first, second = MPCPolicy(name="first"), MPCPolicy(name="second")
    assert served_policy([HoldPolicy(), Wrapper(first), second], "c.yaml") is first
    assert served_policy([HoldPolicy(), second, first], "c.yaml") is second
    with pytest.raises(ValueError, match="c.yaml has no MPCPolicy"):
        served_policy([HoldPolicy()], "c.yaml")
    first.model = "simulator"
    with pytest.raises(ValueError, match="plans with the simulator"):
        served_policy([first, second], "c.yaml")


def test_a_killed_server_is_reported_and_the_client_reconnects(server, files, token, frames):
    """SIGKILL (no closing handshake): the client's next call says the connection was lost,
    reset says the server cannot be reached until it is back, then starts a new session."""
    goal, image, q = frames
    old = server["server"]
    port = port_of(old.url)
    c = PlanningClient(old.url)
    c.reset(goal, task="reach")
    assert c.act({"image": image, "joints": q}).shape == (2, 23)
    old.stop(kill=True)
    with pytest.raises(
        ConnectionLost, match=f"connection to the planning server at {old.url} was lost"
    ):
        c.act({"image": image, "joints": q})
    with pytest.raises(ConnectionLost, match="call reset"):  # no silent reconnect mid-episode
        c.act({"image": image, "joints": q})
    with pytest.raises(ConnectionError, match="cannot reach a planning server"):
        c.reset(goal, task="reach")
    server["server"] = start_server(files, token, port)  # the other tests keep their server
    c.reset(goal, task="reach")  # reconnects: a new session
    assert c.act({"image": image, "joints": q}).shape == (2, 23)
    c.close()
