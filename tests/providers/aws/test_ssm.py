"""SSMTransport against moto, whose Run Command executes nothing: a fake executor runs each
script over SSH on the loopback stand and answers in get_command_invocation's shape, with the
real truncation limits and full output written to S3 as the SSM agent does."""

from __future__ import annotations

import io
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runctl import config
from runctl.errors import TransportError
from runctl.providers.aws.provider import AWSProvider
from runctl.providers.aws.session import AwsSession
from runctl.runtime import Runtime
from runctl.transport.ssm import PREFIX, STDERR_LIMIT, STDOUT_LIMIT, SSMTransport
from tests.providers.aws.conftest import MotoAWS
from tests.stands.sshd import DEFAULT_USER

pytestmark = pytest.mark.integration
BUCKET = "runctl-ssm-out"
NASTY = ["a b", "it's", "$(id)", "*", ""]


class FakeSSMExecutor:
    """Runs what moto's send_command accepted; patches what get_command_invocation says."""

    def __init__(self, sshd: Any, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sshd = sshd
        self.s3 = s3
        self.results: dict[str, dict[str, Any]] = {}
        self.sent: list[dict[str, Any]] = []
        original = AwsSession.client
        hooked: set[int] = set()

        def client(session: AwsSession, service: str, *args: Any, **kw: Any) -> Any:
            made = original(session, service, *args, **kw)
            if service == "ssm" and id(made) not in hooked:  # every client runctl makes
                hooked.add(id(made))
                events = made.meta.events
                events.register("provide-client-params.ssm.SendCommand", self._remember)
                events.register("after-call.ssm.SendCommand", self._execute)
                events.register("after-call.ssm.GetCommandInvocation", self._answer)
            return made

        monkeypatch.setattr(AwsSession, "client", client)

    def _remember(self, params: dict[str, Any], **_kw: Any) -> None:
        self.sent.append(params)

    def _execute(self, parsed: dict[str, Any], **_kw: Any) -> None:
        params = self.sent[-1]
        script = "\n".join(params["Parameters"]["commands"])
        done = subprocess.run(
            [*self.sshd.ssh_argv(), "--", "sh -c " + shlex.quote(script)],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        command_id = parsed["Command"]["CommandId"]
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        self.results[command_id] = {"code": done.returncode, "out": out, "err": err}
        bucket = params.get("OutputS3BucketName")
        if bucket:
            iid = params["InstanceIds"][0]
            base = f"{params['OutputS3KeyPrefix']}/{command_id}/{iid}/awsrunShellScript/" \
                   "0.awsrunShellScript"  # fmt: skip
            self.s3.put_object(Bucket=bucket, Key=f"{base}/stdout", Body=out.encode())
            self.s3.put_object(Bucket=bucket, Key=f"{base}/stderr", Body=err.encode())

    def _answer(self, parsed: dict[str, Any], **_kw: Any) -> None:
        result = self.results[parsed["CommandId"]]
        parsed.update(
            Status="Success" if result["code"] == 0 else "Failed",
            StatusDetails="Success" if result["code"] == 0 else "Failed",
            ResponseCode=result["code"],
            StandardOutputContent=result["out"][:STDOUT_LIMIT],
            StandardErrorContent=result["err"][:STDERR_LIMIT],
        )


@pytest.fixture
def ssm_setup(
    moto_aws: MotoAWS, sshd: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[AWSProvider, FakeSSMExecutor, str]:
    moto_aws.client("s3").create_bucket(Bucket=BUCKET)
    iam = moto_aws.client("iam")
    iam.create_instance_profile(InstanceProfileName="runctl-ssm")
    moto_aws.configure(s3_bucket=BUCKET, ssh_user=sshd.user, transport="ssm")
    runtime = Runtime(config=config.load(), home=config.home())
    provider = AWSProvider(runtime, notify=lambda _m: None)
    ec2 = moto_aws.client("ec2")
    iid = ec2.run_instances(
        ImageId="ami-0al2023000000001", InstanceType="t3.micro", MinCount=1, MaxCount=1,
        IamInstanceProfile={"Name": "runctl-ssm"},
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "runctl:managed", "Value": "true"}]}],
    )["Instances"][0]["InstanceId"]  # fmt: skip
    executor = FakeSSMExecutor(sshd, moto_aws.client("s3"), monkeypatch)
    return provider, executor, iid


def _transport(provider: AWSProvider, iid: str) -> SSMTransport:
    transport = provider.connect(provider.require_instance(iid))
    assert isinstance(transport, SSMTransport)
    transport.poll_s = 0.01
    return transport


def test_run_quotes_args_returns_exit_code_and_stderr(ssm_setup: Any) -> None:
    provider, executor, iid = ssm_setup
    transport = _transport(provider, iid)
    done = transport.run(["python3", "-c", "import sys; print(sys.argv[1:]); "
                          "print('oops', file=sys.stderr); sys.exit(3)", *NASTY])  # fmt: skip
    assert done.returncode == 3
    assert done.text.strip() == repr(NASTY)
    assert done.stderr.decode().strip() == "oops"
    sent = executor.sent[-1]
    assert sent["DocumentName"] == "AWS-RunShellScript"
    assert sent["OutputS3BucketName"] == BUCKET and sent["OutputS3KeyPrefix"] == PREFIX
    # Runs in the login user's home, like SSH.
    home = str(Path(f"~{DEFAULT_USER}").expanduser())
    assert transport.run(["sh", "-c", "pwd"]).text.strip() == home


def test_large_output_comes_from_s3_and_without_bucket_is_an_error(ssm_setup: Any) -> None:
    provider, _executor, iid = ssm_setup
    transport = _transport(provider, iid)
    big = transport.run(["python3", "-c", "print('x' * 100000)"])
    assert len(big.text.strip()) == 100000
    transport.bucket = ""
    with pytest.raises(TransportError, match="truncated"):
        transport.run(["python3", "-c", "print('x' * 30000)"])


def test_input_inline_and_staged_through_s3(ssm_setup: Any, moto_aws: MotoAWS) -> None:
    provider, _executor, iid = ssm_setup
    transport = _transport(provider, iid)
    small = transport.run(["wc", "-c"], input=b"hello")
    assert small.text.strip() == "5"
    payload = bytes(range(256)) * 400  # binary, far beyond a parameter
    done = transport.run(["sha256sum"], input=payload)
    import hashlib

    assert done.text.split()[0] == hashlib.sha256(payload).hexdigest()
    left = moto_aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/staging/")
    assert left.get("KeyCount", 0) == 0  # staged input is deleted afterwards


# core.follow leaves the streaming process's pipes to the garbage collector (harmless in the
# CLI, a ResourceWarning in-process).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_job_submit_follow_and_fetch_over_ssm(ssm_setup: Any, project: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:  # fmt: skip
    from runctl.core import jobs as core
    from runctl.core.targets import Target

    provider, _executor, iid = ssm_setup
    monkeypatch.chdir(project)
    (project / "writes.py").write_text(
        "import os, pathlib, sys\nprint('args', sys.argv[1:])\n"
        "pathlib.Path(os.environ['RUNCTL_OUTPUT_DIR'], 'm.json').write_text('{\"ok\": 1}')\n"
    )
    instance = provider.require_instance(iid)
    request = core.SubmitRequest(argv=["writes.py", "a b"])
    job = core.submit(provider.runtime, Target(provider, instance), request, lambda _m: None).job
    job, _ = core.wait(provider.runtime, job, lambda _m: None, timeout_s=60)
    assert job.state == "succeeded"
    out = io.BytesIO()
    job, _ = core.follow(provider.runtime, job, out, lambda _m: None, follow=True)
    assert b"args ['a b']" in out.getvalue()
    dest = core.fetch(provider.runtime, job, "outputs/m.json", tmp_path / "m.json")
    assert json.loads(dest.read_text()) == {"ok": 1}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_follow_streams_in_slices_without_loss_or_repeats(
    ssm_setup: Any, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runctl.core import jobs as core
    from runctl.core.targets import Target
    from runctl.transport import ssm

    monkeypatch.setattr(ssm, "FOLLOW_SLICE_S", 1)
    provider, executor, iid = ssm_setup
    monkeypatch.chdir(project)
    (project / "ticks.py").write_text(
        "import time\nfor i in range(5):\n    print('tick', i, flush=True)\n    time.sleep(0.7)\n"
    )
    instance = provider.require_instance(iid)
    request = core.SubmitRequest(argv=["ticks.py"])
    job = core.submit(provider.runtime, Target(provider, instance), request, lambda _m: None).job
    out = io.BytesIO()
    job, _ = core.follow(provider.runtime, job, out, lambda _m: None, follow=True)
    assert job.state == "succeeded"
    assert out.getvalue().decode().splitlines() == [f"tick {i}" for i in range(5)]
    slices = [p for p in executor.sent if p["Parameters"]["commands"][0].count("timeout 1 ")]
    assert len(slices) >= 2  # really followed across several bounded SSM commands
