"""SSM transport: commands through Run Command (``AWS-RunShellScript``), no SSH, no open port.

Needs the instance to run the SSM agent with an instance profile granting
``AmazonSSMManagedInstanceCore``. Limits it works within:

* ``get_command_invocation`` returns only the first 24,000 characters of stdout and 8,000 of
  stderr. With ``aws.s3_bucket`` set, every command also writes its full output to
  ``s3://BUCKET/runctl-ssm/<command-id>/<instance-id>/.../{stdout,stderr}``, and output that
  reached a limit is read from there (listing the prefix, never guessing the plugin dir name).
  Without a bucket a truncated answer is an error, never silently short.
* Parameters are kept small: stdin for a command (a code tarball, the agent) is inlined as
  base64 up to ``INLINE_INPUT_BYTES``; larger input goes through S3 as a presigned URL the host
  fetches with python's urllib (no AWS CLI or credentials needed on the host).
* Output is text: binary output (fetching files) travels base64-encoded.
* There is no streaming in SSM: ``popen`` relays a command's output when it ends; a following
  log tail runs in slices of ``FOLLOW_SLICE_S`` seconds, each resuming at the byte offset the
  last ended at, so ``logs --follow`` shows output with up to that delay.

Commands run as root under SSM; runctl switches to the instance's login user (``sudo -H -u``)
and its home, so paths and file owners are the same as over SSH.
"""

from __future__ import annotations

import base64
import contextlib
import io
import re
import shlex
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runctl.errors import TransportError
from runctl.models import Completed
from runctl.transport.base import Transport

STDOUT_LIMIT, STDERR_LIMIT = 24_000, 8_000
INLINE_INPUT_BYTES = 12_000
PREFIX = "runctl-ssm"
FOLLOW_SLICE_S = 20
TIMED_OUT = 124  # timeout(1)'s exit code: the slice ended, the tail did not
# Relays framed output from the transport's thread: O<n>\n<bytes> (stdout), E<n>\n<bytes>
# (stderr), X<code>\n (exit).
_RELAY = """\
import sys
src, out, err = sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer
while True:
    head = src.readline()
    if not head:
        sys.exit(255)
    kind, size = head[:1], int(head[1:])
    if kind == b"X":
        sys.exit(size)
    stream = out if kind == b"O" else err
    stream.write(src.read(size))
    stream.flush()
"""
_FINAL = {"Success", "Failed", "Cancelled", "TimedOut", "Cancelling"}
_NOT_REGISTERED = {"InvalidInstanceId", "InvalidInstanceInformationFilterValue"}


class SSMTransport(Transport):
    # Command input travels inside the command (SSM keeps it in its history): no secrets.
    records_input = True

    def __init__(
        self,
        session: Any,
        instance_id: str,
        *,
        bucket: str = "",
        user: str = "",
        python: str = "python3",
        poll_s: float = 1.0,
    ) -> None:
        self.session = session
        self.instance_id = instance_id
        self.bucket = bucket
        self.user = user
        self.python = python
        self.poll_s = poll_s
        self.label = f"ssm {instance_id}"

    # ------------------------------------------------------------------ run

    def script(self, argv: Sequence[str], stdin_cmd: str = "") -> str:
        """The shell text SSM runs: become the login user in their home, then exec argv."""
        command = shlex.join(argv)
        inner = shlex.quote('cd && exec "$@"')
        body = (
            f"u={shlex.quote(self.user)}\n"
            'if [ -n "$u" ] && [ "$(id -u)" = 0 ] && [ "$(id -un)" != "$u" ] '
            '&& id "$u" >/dev/null 2>&1; then\n'
            f'  exec sudo -H -u "$u" -- sh -c {inner} sh {command}\nfi\n'
            f'cd "${{HOME:-/root}}" && exec {command}'
        )
        if not stdin_cmd:
            return body
        return f"{stdin_cmd} | (\n{body}\n)"

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Completed:
        staged = None
        stdin_cmd = ""
        if input:
            encoded = base64.b64encode(input).decode()
            if len(encoded) <= INLINE_INPUT_BYTES:
                stdin_cmd = f"printf %s {encoded} | base64 -d"
            else:
                staged, url = self._stage(input)
                fetch = (
                    "import sys,urllib.request as u;"
                    "sys.stdout.buffer.write(u.urlopen(sys.argv[1]).read())"
                )
                stdin_cmd = shlex.join(["python3", "-c", fetch, url])
        try:
            return self._execute(tuple(argv), self.script(argv, stdin_cmd), timeout)
        finally:
            if staged:
                self._s3_call("delete_object", Bucket=self.bucket, Key=staged)

    def _execute(self, argv: tuple[str, ...], script: str, timeout: float | None) -> Completed:
        ssm = self.session.client("ssm")
        execution = int(timeout) if timeout else 3600
        args: dict[str, Any] = {
            "InstanceIds": [self.instance_id],
            "DocumentName": "AWS-RunShellScript",
            "Comment": "runctl",
            "TimeoutSeconds": 60,
            "Parameters": {"commands": [script], "executionTimeout": [str(max(execution, 1))]},
        }
        if self.bucket:
            args["OutputS3BucketName"] = self.bucket
            args["OutputS3KeyPrefix"] = PREFIX
        try:
            command_id = ssm.send_command(**args)["Command"]["CommandId"]
        except Exception as exc:  # noqa: BLE001 - mapped to one message with a hint
            raise self._error(exc, "sending the command") from None
        deadline = time.monotonic() + execution + 60
        while True:
            answer = self._invocation(ssm, command_id)
            if answer is not None and answer.get("Status") in _FINAL:
                break
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"SSM command {command_id} on {self.instance_id} did not finish in time",
                    hint="it may still run; check the SSM console",
                )
            time.sleep(self.poll_s)
        stdout = str(answer.get("StandardOutputContent", ""))
        stderr = str(answer.get("StandardErrorContent", ""))
        if len(stdout) >= STDOUT_LIMIT or len(stderr) >= STDERR_LIMIT:
            stdout, stderr = self._full_output(command_id, stdout, stderr)
        code = int(answer.get("ResponseCode", -1))
        if answer["Status"] != "Success" and code <= 0:
            raise TransportError(
                f"SSM command on {self.instance_id} ended {answer['Status']}",
                hint="check the SSM agent on the instance (`runctl aws status ID`)",
            )
        return Completed(argv, code, stdout.encode(), stderr.encode())

    def _invocation(self, ssm: Any, command_id: str) -> dict[str, Any] | None:
        try:
            answer: dict[str, Any] = ssm.get_command_invocation(
                CommandId=command_id, InstanceId=self.instance_id
            )
            return answer
        except Exception as exc:  # noqa: BLE001 - eventual consistency right after sending
            if _code(exc) == "InvocationDoesNotExist":
                return None
            raise self._error(exc, "reading the command result") from None

    def _full_output(self, command_id: str, stdout: str, stderr: str) -> tuple[str, str]:
        if not self.bucket:
            raise TransportError(
                f"output of an SSM command on {self.instance_id} was truncated by SSM",
                hint="set aws.s3_bucket so full output is read from S3, or use --transport ssh",
            )
        prefix = f"{PREFIX}/{command_id}/{self.instance_id}/"
        listing = self._s3_call("list_objects_v2", Bucket=self.bucket, Prefix=prefix)
        for item in listing.get("Contents", []):
            key = str(item["Key"])
            body = self._s3_call("get_object", Bucket=self.bucket, Key=key)["Body"].read()
            if key.endswith("/stdout"):
                stdout = body.decode(errors="replace")
            elif key.endswith("/stderr"):
                stderr = body.decode(errors="replace")
        return stdout, stderr

    def _stage(self, data: bytes) -> tuple[str, str]:
        if not self.bucket:
            raise TransportError(
                f"{len(data)} bytes of input are too large for an SSM parameter",
                hint="set aws.s3_bucket (used for staging), or use --transport ssh",
            )
        key = f"{PREFIX}/staging/{self.instance_id}/{uuid.uuid4().hex}"
        self._s3_call("put_object", Bucket=self.bucket, Key=key, Body=data)
        url = self.session.client("s3").generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=900
        )
        return key, str(url)

    def _s3_call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.session.client("s3"), method)(**kwargs)
        except Exception as exc:  # noqa: BLE001 - mapped to one message with a hint
            raise TransportError(
                f"S3 {method} on s3://{self.bucket} failed: {_code(exc) or exc}",
                hint="check aws.s3_bucket and that your credentials may use it",
            ) from None

    def _error(self, exc: BaseException, action: str) -> TransportError:
        code = _code(exc)
        if code in _NOT_REGISTERED:
            return TransportError(
                f"{self.instance_id} is not registered with SSM ({code})",
                hint="it needs the SSM agent and an instance profile with "
                "AmazonSSMManagedInstanceCore; a new instance takes a minute to register",
            )
        return TransportError(
            f"SSM failed {action} on {self.instance_id}: {code or exc}",
            hint="check ssm:SendCommand permissions and the instance profile",
        )

    # ------------------------------------------------------------ streaming

    def popen(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Stream ``argv``'s output through a local relay process.

        SSM cannot stream, so a command is run to completion and its output relayed. A
        following log tail (``... tail --follow --offset N``) is instead run in slices of
        ``FOLLOW_SLICE_S`` seconds, each continuing at the byte the last one ended, so its
        output appears within a slice of being written and no SSM command runs for hours.
        """
        proc = subprocess.Popen(
            [sys.executable, "-c", _RELAY],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None
        thread = threading.Thread(target=self._pump, args=(list(argv), proc.stdin), daemon=True)
        thread.start()
        return proc

    def _pump(self, argv: list[str], sink: Any) -> None:
        def frame(kind: bytes, data: bytes) -> None:
            sink.write(kind + str(len(data)).encode() + b"\n" + data)
            sink.flush()

        try:
            if "--follow" not in argv or "--offset" not in argv:
                done = self.run(argv)
                frame(b"O", done.stdout)
                frame(b"E", done.stderr)
                sink.write(b"X%d\n" % done.returncode)
                return
            at = argv.index("--offset") + 1
            offset = int(argv[at])
            first_err = b""
            while True:
                done = self.run(
                    ["timeout", str(FOLLOW_SLICE_S), *argv], timeout=FOLLOW_SLICE_S + 60
                )
                frame(b"O", done.stdout)
                if "--last-lines" in argv:
                    found = re.search(rb"^RUNCTL-OFFSET (\d+)$", done.stderr, re.MULTILINE)
                    offset = int(found.group(1)) if found else offset
                    first_err = found.group(0) + b"\n" if found else b""
                    cut = argv.index("--last-lines")
                    del argv[cut : cut + 2]
                    at = argv.index("--offset") + 1
                offset += len(done.stdout)
                argv[at] = str(offset)
                if b"RUNCTL-END" in done.stderr or done.returncode != TIMED_OUT:
                    frame(b"E", first_err + done.stderr)
                    sink.write(b"X%d\n" % (0 if b"RUNCTL-END" in done.stderr else done.returncode))
                    return
        except Exception as exc:  # noqa: BLE001 - the reader sees a dropped stream and retries
            with contextlib.suppress(OSError):
                frame(b"E", f"{exc}\n".encode())
                sink.write(b"X255\n")
        finally:
            with contextlib.suppress(OSError):
                sink.close()

    # ---------------------------------------------------------------- files

    def send_files(self, root: Path, files: Sequence[str], remote_dir: str) -> int:
        if not files:
            return 0
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for rel in files:
                tar.add(root / rel, arcname=rel, recursive=False)
        remote = ["sh", "-c", 'mkdir -p "$1" && tar -C "$1" -xzf -', "sh", remote_dir]
        done = self.run(remote, input=buffer.getvalue(), timeout=600)
        if done.returncode != 0:
            raise TransportError(
                f"copying files to {self.instance_id} failed: {done.stderr.decode().strip()}"
            )
        return sum((root / f).stat().st_size for f in files)

    def fetch(
        self, remote_path: str, local_path: Path, *, recursive: bool, exclude: Sequence[str] = ()
    ) -> None:
        script = (
            'd=$1; shift; if [ -d "$d" ]; then tar -C "$d" "$@" -czf - . | base64; '
            'else base64 < "$d"; fi'
        )
        skip = [f"--exclude=./{name}" for name in exclude]
        done = self.run(["sh", "-c", script, "sh", remote_path, *skip], timeout=600)
        if done.returncode != 0:
            raise TransportError(
                f"copying {remote_path} from {self.instance_id} failed: "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        data = base64.b64decode(done.stdout)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        if recursive:
            local_path.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.extractall(local_path, filter="data")
        else:
            tmp = local_path.with_name(local_path.name + ".runctl-part")
            tmp.write_bytes(data)
            tmp.replace(local_path)


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
