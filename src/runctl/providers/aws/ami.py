"""Choosing an AMI for an instance type, and what the AMI tells us (root device, login user).

GPU types (``GpuInfo`` in ``describe_instance_types``, not a guess from the name) get the
latest Deep Learning Base AMI, everything else Amazon Linux 2023; both come from AWS's public
SSM parameters (names configurable: ``aws.gpu_ami_parameter`` / ``aws.cpu_ami_parameter``,
``{arch}`` is replaced by x86_64 or arm64). The AMI's architecture must be one the instance
type supports, and the root volume is sized at the AMI's own ``RootDeviceName`` (mapping a
different device name would add a second volume instead of growing the root).
"""

from __future__ import annotations

from dataclasses import dataclass

from runctl.config import Config
from runctl.errors import NotFoundError, UsageError
from runctl.providers.aws.session import AwsSession, aws_errors, error_code

GPU_AMI_PARAMETER = (
    "/aws/service/deeplearning/ami/{arch}/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
)
CPU_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
# Used when the SSM parameter cannot be read (no ssm:GetParameter permission, other partition).
_NAME_PATTERNS = {
    True: "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *",
    False: "al2023-ami-2023.*-kernel-*",
}


@dataclass(frozen=True)
class TypeInfo:
    instance_type: str
    architectures: tuple[str, ...]
    vcpus: int
    memory_mib: int
    gpu_count: int
    gpu_name: str
    gpu_memory_mib: int

    @property
    def is_gpu(self) -> bool:
        return self.gpu_count > 0

    @property
    def arch(self) -> str:
        return "arm64" if "arm64" in self.architectures else "x86_64"


@dataclass(frozen=True)
class AmiInfo:
    image_id: str
    name: str
    architecture: str
    root_device_name: str
    login_user: str
    source: str  # "--ami-id" | "ssm:<parameter>" | "search"
    root_gb: int = 0  # size of the root snapshot: the root volume cannot be smaller


def describe_type(session: AwsSession, instance_type: str) -> TypeInfo:
    """Facts about ``instance_type``; UsageError if it does not exist in the region."""
    try:
        with aws_errors(f"describing instance type {instance_type}"):
            found = session.client("ec2").describe_instance_types(InstanceTypes=[instance_type])
    except (NotFoundError, UsageError):
        found = {"InstanceTypes": []}
    types = found.get("InstanceTypes", [])
    if not types:
        raise UsageError(
            f"unknown instance type {instance_type!r} in {session.region}",
            hint="check the spelling (e.g. t3.micro, g5.xlarge) and --region",
        )
    raw = types[0]
    gpus = raw.get("GpuInfo", {}).get("Gpus", [])
    return TypeInfo(
        instance_type=instance_type,
        architectures=tuple(raw.get("ProcessorInfo", {}).get("SupportedArchitectures", [])),
        vcpus=int(raw.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
        memory_mib=int(raw.get("MemoryInfo", {}).get("SizeInMiB", 0)),
        gpu_count=sum(int(g.get("Count", 0)) for g in gpus),
        gpu_name=str(gpus[0].get("Name", "")) if gpus else "",
        gpu_memory_mib=int(raw.get("GpuInfo", {}).get("TotalGpuMemoryInMiB", 0)),
    )


def login_user(name: str, description: str = "") -> str:
    """The default SSH user of an AMI, from its name/description."""
    text = f"{name} {description}".lower()
    if "ubuntu" in text:
        return "ubuntu"
    if "debian" in text:
        return "admin"
    return "ec2-user"  # Amazon Linux, the DLAMIs on Amazon Linux, RHEL-likes


def describe_ami(session: AwsSession, image_id: str, source: str) -> AmiInfo:
    with aws_errors(f"looking up AMI {image_id}"):
        images = session.client("ec2").describe_images(ImageIds=[image_id]).get("Images", [])
    if not images:
        raise NotFoundError(
            f"AMI {image_id} not found in {session.region}",
            hint="AMIs are per region; check --region or drop --ami-id",
        )
    image = images[0]
    root_name = str(image.get("RootDeviceName") or "/dev/xvda")
    root_gb = 0
    for mapping in image.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == root_name:
            root_gb = int(mapping.get("Ebs", {}).get("VolumeSize", 0))
    return AmiInfo(
        image_id=image_id,
        name=str(image.get("Name", "")),
        architecture=str(image.get("Architecture", "x86_64")),
        root_device_name=root_name,
        login_user=login_user(str(image.get("Name", "")), str(image.get("Description", ""))),
        source=source,
        root_gb=root_gb,
    )


def resolve_ami(
    session: AwsSession, config: Config, info: TypeInfo, ami_id: str | None = None
) -> AmiInfo:
    """The AMI to launch ``info`` with; UsageError when its architecture does not fit."""
    if ami_id:
        if not ami_id.startswith("ami-"):
            raise UsageError(f"invalid AMI id {ami_id!r}", hint="AMI ids look like ami-0123...")
        ami = describe_ami(session, ami_id, "--ami-id")
    else:
        key = "aws.gpu_ami_parameter" if info.is_gpu else "aws.cpu_ami_parameter"
        parameter = str(config.get(key)).replace("{arch}", info.arch)
        image_id = _from_parameter(session, parameter)
        if image_id:
            ami = describe_ami(session, image_id, f"ssm:{parameter}")
        else:
            ami = _search(session, info)
    if info.architectures and ami.architecture not in info.architectures:
        raise UsageError(
            f"AMI {ami.image_id} is {ami.architecture} but {info.instance_type} runs "
            f"{'/'.join(info.architectures)}",
            hint="pick an AMI built for that architecture, or drop --ami-id",
        )
    return ami


def _from_parameter(session: AwsSession, name: str) -> str | None:
    try:
        with aws_errors(f"reading SSM parameter {name}"):
            value = session.client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
    except NotFoundError:
        return None
    except Exception as exc:
        if error_code(exc.__cause__ or exc) in {"AccessDeniedException", "ParameterNotFound"}:
            return None
        raise
    return str(value) if str(value).startswith("ami-") else None


def _search(session: AwsSession, info: TypeInfo) -> AmiInfo:
    pattern = _NAME_PATTERNS[info.is_gpu]
    with aws_errors("searching for an AMI"):
        images = (
            session.client("ec2")
            .describe_images(
                Owners=["amazon"],
                Filters=[
                    {"Name": "name", "Values": [pattern]},
                    {"Name": "state", "Values": ["available"]},
                    {"Name": "architecture", "Values": [info.arch]},
                ],
            )
            .get("Images", [])
        )
    if not images:
        raise NotFoundError(
            f"no {'Deep Learning' if info.is_gpu else 'Amazon Linux 2023'} AMI for "
            f"{info.arch} found in {session.region}",
            hint="pass --ami-id",
        )
    newest = max(images, key=lambda i: str(i.get("CreationDate", "")))
    return describe_ami(session, str(newest["ImageId"]), "search")
