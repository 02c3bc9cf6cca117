"""The cloud API client against the emulator with the real SDKs: credentials (explicit,
secret file, env chain, rotation), retries, rate limiting, and secrets that never leak."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import replace

import pytest

from ecs_worker.cloud import CloudClient, CloudError, is_retryable
from ecs_worker.cloud.errors import PERMANENT_CODES, RETRY_AT_NEXT_TOKEN, RETRYABLE_CODES
from ecs_worker.cloud.ratelimit import TokenBucket
from ecs_worker.config import CloudConfig, parse_config
from ecs_worker.cloud.credentials import Credentials, StaticProvider
from ecs_worker.testing import run_emulator

REGION = "cn-hangzhou"
CANARY_SECRET = "canary-SECRET-7f3a9c1e"
CANARY_TOKEN = "canary-TOKEN-4b8d2e6f"
KEY = {"access_key_id": "LTAIcloudtest01", "access_key_secret": "cloud-test-secret-01"}
STS = {"access_key_id": "STS.canary01", "access_key_secret": CANARY_SECRET, "security_token": CANARY_TOKEN}


def fleet(*credentials, faults=None):
    return {"region": REGION, "account_id": "1690000000000000", "credentials": list(credentials or [KEY]),
            "instances": [{"id": "i-one", "status": "Running", "tags": {}}], "faults": faults or {}}


def settings(emu, **over):
    over = {"region": REGION, "endpoint": emu.endpoint if emu else "", "protocol": "http", **over}
    return CloudConfig(**over)


def cloud_for(emu, creds=KEY, backoff=(0.01, 0.05), **over):
    provider = StaticProvider(Credentials(creds["access_key_id"], creds["access_key_secret"],
                                          creds.get("security_token")))
    return CloudClient(settings(emu, **over), provider, backoff_base=backoff[0], backoff_cap=backoff[1])


def instance_ids(doc):
    return [i["InstanceId"] for i in doc["Instances"]["Instance"]]


def test_explicit_keys_from_config_reach_the_emulator(emulator):
    config = parse_config({"cloud": {"region": emulator.region, "endpoint": emulator.endpoint, "protocol": "http"},
                           "credentials": {"access_key_id": emulator.access_key_id,
                                           "access_key_secret": emulator.access_key_secret}})
    doc = CloudClient.from_config(config).ecs("DescribeInstances", InstanceIds=["i-bp1web000000000002"])
    assert instance_ids(doc) == ["i-bp1web000000000002"]


def test_secret_file_is_read_and_a_wrong_secret_is_a_clear_error(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(KEY["access_key_secret"] + "\n")
    with run_emulator(fleet()) as emu:
        base = {"cloud": {"region": REGION, "endpoint": emu.endpoint, "protocol": "http"}}
        good = parse_config({**base, "credentials": {"access_key_id": KEY["access_key_id"],
                                                     "access_key_secret_file": str(secret_file)}})
        assert instance_ids(CloudClient.from_config(good).ecs("DescribeInstances")) == ["i-one"]

        secret_file.write_text(CANARY_SECRET)
        with pytest.raises(CloudError) as caught:
            CloudClient.from_config(good).ecs("DescribeInstances")
    assert caught.value.code in ("SignatureDoesNotMatch", "InvalidAccessKeySecret")
    assert not caught.value.retryable
    assert CANARY_SECRET not in str(caught.value)


def test_credentials_are_fetched_per_request_so_rotation_needs_no_restart(monkeypatch):
    class Rotating:
        def __init__(self):
            self.current = Credentials("LTAIexpired0001", "whatever")

        def get_credentials(self):
            return self.current

    # The old core SDK would let these env vars override what we pass it; the signer must not.
    monkeypatch.setenv("ALIYUN_ACCESS_KEY_ID", "LTAIfromenv0001")
    monkeypatch.setenv("ALIYUN_ACCESS_KEY_SECRET", "env-secret")
    provider = Rotating()
    with run_emulator(fleet(KEY, STS)) as emu:
        cloud = CloudClient(settings(emu), provider)
        with pytest.raises(CloudError) as caught:
            cloud.ecs("DescribeInstances")
        assert caught.value.code.startswith("InvalidAccessKeyId")

        provider.current = Credentials(STS["access_key_id"], CANARY_SECRET, CANARY_TOKEN)  # STS rotated in
        assert instance_ids(cloud.ecs("DescribeInstances")) == ["i-one"]
        provider.current = Credentials(KEY["access_key_id"], KEY["access_key_secret"])  # and plain keys again
        assert instance_ids(cloud.ecs("DescribeInstances")) == ["i-one"]


def test_https_is_the_default_protocol():
    assert CloudConfig().protocol == "https"
    with run_emulator(fleet()) as emu:  # the emulator speaks http, so an https request cannot succeed
        cloud = cloud_for(emu, protocol="https", max_retries=0)
        with pytest.raises(CloudError) as caught:
            cloud.ecs("DescribeInstances")
    assert caught.value.code == "SDK.HttpError"


def test_transient_errors_are_retried_then_surface_with_their_code():
    with run_emulator(fleet(faults={"ecs": {"error_rate": 1.0}})) as emu:
        cloud = cloud_for(emu, max_retries=3)
        with pytest.raises(CloudError) as caught:
            cloud.ecs("DescribeInstances")
        assert caught.value.code == "InternalError" and caught.value.http_status == 500
        assert emu.state()["calls"]["ecs:DescribeInstances"] == 4


def test_non_retryable_errors_are_not_retried():
    with run_emulator(fleet()) as emu:
        cloud = cloud_for(emu, max_retries=5)
        with pytest.raises(CloudError) as caught:
            cloud.ecs("StartInstance", InstanceId="i-one")  # already Running
        assert caught.value.code == "IncorrectInstanceStatus"
        assert emu.state()["calls"]["ecs:StartInstance"] == 1


def test_a_reboot_is_retried_only_when_throttled():
    """RebootInstance is not idempotent (apis.py: REFUSED_ONLY): a 500 may have rebooted already."""
    with run_emulator(fleet(faults={"ecs": {"error_rate": 1.0}})) as emu:
        cloud = cloud_for(emu, max_retries=3)
        with pytest.raises(CloudError) as caught:
            cloud.ecs("RebootInstance", InstanceId="i-one")
        assert caught.value.code == "InternalError" and emu.state()["calls"]["ecs:RebootInstance"] == 1
        emu.set_faults({"ecs": {"error_rate": 1.0, "error_code": "Throttling.User"}})
        with pytest.raises(CloudError):
            cloud.ecs("RebootInstance", InstanceId="i-one")
        assert emu.state()["calls"]["ecs:RebootInstance"] == 1 + 4  # throttled: refused, so retried


def test_a_call_outside_the_registry_is_refused_before_it_is_sent():
    with run_emulator(fleet()) as emu:
        with pytest.raises(ValueError, match="not in the API registry"):
            cloud_for(emu).ecs("DeleteInstance", InstanceId="i-one")
        assert "ecs:DeleteInstance" not in emu.state()["calls"]


@pytest.mark.parametrize("code", ["OperationBusy", "VServerGroupProcessing", "ServiceIsConfiguring",
                                  "Throttling", "ServiceUnavailable"])
def test_slb_busy_codes_are_retried_until_they_clear(code):
    state = fleet(faults={"slb": {"throttle_rps": 5, "throttle_burst": 1, "throttle_code": code,
                                  "throttle_status": 400}})
    state["load_balancers"] = [{"id": "lb-1", "vserver_groups": [{"id": "rsp-1"}]}]
    with run_emulator(state) as emu:
        cloud = cloud_for(emu, backoff=(0.05, 0.4), max_retries=10, slb_rps=100)
        for _ in range(2):
            cloud.slb("DescribeVServerGroupAttribute", VServerGroupId="rsp-1")
        assert cloud.retries[("slb", code)] > 0


def test_a_busy_answer_is_retried_at_the_next_token_not_after_a_backoff_sleep():
    """SystemBusy (449) is the service's momentary "too busy": it is retried `max_retries`
    times waiting only for the next rate-limit token (no sleep, the rate kept), then
    `max_retries` times more with backoff, like a 5xx from the start."""
    state = fleet(faults={"slb": {"error_rate": 1.0, "error_code": "SystemBusy",
                                  "throttle_rps": 10, "throttle_burst": 2}})
    state["load_balancers"] = [{"id": "lb-1", "vserver_groups": [{"id": "rsp-1"}]}]
    with run_emulator(state) as emu:
        slept = []
        cloud = CloudClient(settings(emu, max_retries=3, slb_rps=10), StaticProvider(Credentials(
            KEY["access_key_id"], KEY["access_key_secret"])), backoff_base=1.0, sleep=slept.append)
        for _ in range(3):  # spend the burst (2.5): every try below waits for its token
            cloud.buckets["slb"].acquire()
        start = time.monotonic()
        with pytest.raises(CloudError) as caught:
            cloud.slb("DescribeVServerGroupAttribute", VServerGroupId="rsp-1")
        took = time.monotonic() - start
        assert caught.value.code == "SystemBusy" and caught.value.http_status == 449
        assert emu.state()["calls"]["slb:DescribeVServerGroupAttribute"] == 1 + 3 + 3
        assert cloud.retries[("slb", "SystemBusy")] == 6
        assert len(slept) == 3  # only the last three backed off (recorded here, not slept)
        assert 0.6 <= took < 2.0  # 7 tokens at 10/s: paced by the rate (the server throttled none)
        emu.set_faults({"slb": {"error_rate": 1.0, "error_code": "InternalError"}})
        slept.clear()
        with pytest.raises(CloudError):
            cloud.slb("DescribeVServerGroupAttribute", VServerGroupId="rsp-1")
        assert len(slept) == 3  # a 500 backs off from the first retry


RETRY_CODES = sorted(RETRYABLE_CODES - {"SDK.HttpError"}) + ["Throttling.Something.New"]
NO_RETRY_CODES = sorted(PERMANENT_CODES)


def test_every_listed_code_is_retried_or_not_whatever_its_status():
    """Each code in RETRYABLE_CODES / PERMANENT_CODES, answered by the emulator with its
    documented status (SystemBusy 449, BackendServer.configuring 409, ...): the code decides."""
    state = fleet()
    state["load_balancers"] = [{"id": "lb-1", "vserver_groups": [{"id": "rsp-1"}]}]
    with run_emulator(state) as emu:
        cloud = cloud_for(emu, backoff=(0.001, 0.002), max_retries=2, slb_rps=1000)
        for code in RETRY_CODES + NO_RETRY_CODES:
            emu.set_faults({"slb": {"error_rate": 1.0, "error_code": code}})
            emu.reset_calls()
            with pytest.raises(CloudError) as caught:
                cloud.slb("DescribeVServerGroupAttribute", VServerGroupId="rsp-1")
            assert caught.value.code == code
            sent = emu.state()["calls"]["slb:DescribeVServerGroupAttribute"]
            tries = 1 + 2 * (code in RETRY_CODES) + 2 * (code in RETRY_AT_NEXT_TOKEN)  # (see the busy test below)
            assert sent == tries, (code, caught.value.http_status, sent)


@pytest.mark.parametrize("code,status,retry", [
    ("SystemBusy", 449, True), ("BackendServer.configuring", 409, True), ("Rejected.Throttling", 400, True),
    ("Throttling.User", 400, True), ("ServiceUnavailable", 503, True), ("SDK.HttpError", None, True),
    ("Forbidden.RAM", 403, False), ("InvalidAccessKeyId.NotFound", 404, False),
    ("IncorrectInstanceStatus", 500, False),  # listed as permanent: a 5xx does not make it retryable
    ("SomethingNew", 502, True), ("SomethingNew", 400, False), ("SomethingNew", None, False)])
def test_the_code_decides_and_the_status_only_for_unlisted_codes(code, status, retry):
    assert is_retryable(code, status) is retry


def test_a_denied_rpc_call_names_the_ram_action():
    with run_emulator(fleet(faults={"ecs": {"error_rate": 1.0, "error_code": "Forbidden.RAM"}})) as emu:
        with pytest.raises(CloudError) as caught:
            cloud_for(emu, max_retries=3).ecs("StartInstance", InstanceId="i-one")
        assert caught.value.code == "Forbidden.RAM" and "ecs:StartInstance" in str(caught.value)
        assert emu.state()["calls"]["ecs:StartInstance"] == 1


def test_the_token_bucket_keeps_a_burst_under_the_server_limit():
    with run_emulator(fleet(faults={"ecs": {"throttle_rps": 10}})) as emu:
        cloud = cloud_for(emu, ecs_rps=10, max_retries=0)
        errors = []

        def burst():
            for _ in range(5):
                try:
                    cloud.ecs("DescribeInstances")
                except CloudError as exc:
                    errors.append(exc.code)

        threads = [threading.Thread(target=burst) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []  # 25 calls, none throttled although the server allows only 10/s
        assert emu.state()["calls"]["ecs:DescribeInstances"] == 25


def test_token_bucket_rate_with_a_fake_clock():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(rate=4, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        bucket.acquire()
    assert now[0] == pytest.approx((10 - 2) / 4)  # the burst is free, then 4 per second


def test_canary_secret_and_token_never_reach_logs_or_exceptions(caplog, capfd, monkeypatch):
    monkeypatch.setenv("DEBUG", "sdk")  # the core SDK's own wire dump switch
    caplog.set_level(logging.DEBUG)
    texts = []
    with run_emulator(fleet(STS, faults={"ecs": {"throttle_rps": 2, "throttle_burst": 1}})) as emu:
        cloud = cloud_for(emu, STS, backoff=(0.05, 0.4), ecs_rps=100, max_retries=10)
        for _ in range(3):  # throttled and retried, then fine
            cloud.ecs("DescribeInstances", InstanceIds=["i-one"])
        emu.set_faults({"ecs": {}})
        failures = [
            cloud_for(emu, {**STS, "access_key_secret": CANARY_SECRET + "x"}, max_retries=0),  # bad signature
            cloud_for(None, STS, max_retries=1),  # the real endpoint resolution, then no network route
        ]
        failures[1].settings = replace(failures[1].settings, endpoint="127.0.0.1:9")  # nothing listens
        for bad in failures:
            with pytest.raises(CloudError) as caught:
                bad.ecs("DescribeInstances")
            texts += [str(caught.value), repr(caught.value),
                      "".join(traceback.format_exception(caught.value))]
    out, err = capfd.readouterr()
    everything = "\n".join(texts + [caplog.text, out, err])
    assert "SignatureDoesNotMatch" in everything or "InvalidAccessKeySecret" in everything
    assert "SDK.HttpError" in everything
    for secret in (CANARY_SECRET, CANARY_TOKEN, "Signature="):
        assert secret not in everything


def test_env_chain_end_to_end_in_a_subprocess_without_leaking(tmp_path):
    """`ecs-worker replay` with no keys in the config: the standard chain finds them in
    ALIBABA_CLOUD_* env vars, and ALIYUN_* env vars (which the old SDK would prefer) are ignored."""
    state = fleet(STS)
    state["instances"] = [{"id": "i-tagged", "status": "Stopped",
                           "tags": {"ecs-worker:auto-restart": "true"}}]
    event = {"id": "evt-1", "name": "Instance:StateChange", "regionId": REGION,
             "content": {"resourceId": "i-tagged", "state": "Stopped"}}
    (tmp_path / "event.json").write_text(json.dumps(event))
    with run_emulator(state) as emu:
        (tmp_path / "config.toml").write_text(
            f'[cloud]\nregion = "{REGION}"\nendpoint = "{emu.endpoint}"\nprotocol = "http"\n'
            f'[worker]\nstate_dir = "{tmp_path / "state"}"\n[logging]\nlevel = "DEBUG"\n'
            f'[plugins]\ndisabled = ["slb", "webhook"]\n[plugins.restart]\ngrace_seconds = 0\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "ALIYUN_"))}
        env.update(HOME=str(tmp_path), ALIBABA_CLOUD_ACCESS_KEY_ID=STS["access_key_id"],
                   ALIBABA_CLOUD_ACCESS_KEY_SECRET=CANARY_SECRET, ALIBABA_CLOUD_SECURITY_TOKEN=CANARY_TOKEN,
                   ALIBABA_CLOUD_ECS_METADATA_DISABLED="true", ALIBABA_CLOUD_CLI_PROFILE_DISABLED="true",
                   ALIYUN_ACCESS_KEY_ID="LTAIwrong0001", ALIYUN_ACCESS_KEY_SECRET="wrong", DEBUG="sdk",
                   NO_PROXY="127.0.0.1")
        proc = subprocess.run([sys.executable, "-m", "ecs_worker", "replay", "-c", str(tmp_path / "config.toml"),
                               "--json", str(tmp_path / "event.json")],
                              capture_output=True, text=True, env=env, timeout=60)
        final = next(i["status"] for i in emu.state()["instances"] if i["id"] == "i-tagged")
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["outcome"] == "handled"
    assert [(a["action"], a["result"]) for a in row["actions"]] == [("StartInstance", "ok")]
    assert final in ("Starting", "Running")
    for secret in (CANARY_SECRET, CANARY_TOKEN):
        assert secret not in proc.stdout and secret not in proc.stderr


def test_a_turn_waited_for_ahead_is_the_calls_token_and_retries_take_their_own():
    """`turn(api)` takes the token before the caller chooses what to send (a batcher's late
    items join); the call inside spends it, so the rate is unchanged: one token per attempt."""
    with run_emulator(fleet(faults={"ecs": {"error_rate": 1.0}})) as emu:
        cloud = cloud_for(emu, max_retries=2)
        taken = []
        real = cloud.buckets["ecs"].acquire
        cloud.buckets["ecs"].acquire = lambda: taken.append(1) or real()
        with cloud.turn("ecs"):
            assert len(taken) == 1
            with pytest.raises(CloudError):
                cloud.ecs("DescribeInstances")  # 3 attempts: the turn's token, then 2 more
        assert len(taken) == 3 and emu.state()["calls"]["ecs:DescribeInstances"] == 3
        cloud.buckets["ecs"].acquire = real
        with cloud.turn("ecs"):
            pass  # a turn not spent is not carried over to a later call
        emu.set_faults({"ecs": {"error_rate": 0.0}})
        taken.clear()
        cloud.buckets["ecs"].acquire = lambda: taken.append(1) or real()
        cloud.ecs("DescribeInstances")
        assert len(taken) == 1
