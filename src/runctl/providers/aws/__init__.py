"""AWS: EC2 instances, EBS volumes, SSH or SSM transport. boto3 is imported only in here.

Modules: ``session`` (one region, every client), ``ec2`` (instances, tags, key pairs, security
groups), ``ami`` (DLAMI / Amazon Linux choice), ``pricing`` (Pricing API + shipped table),
``spot`` (requests that never orphan), ``launch`` (the create flow), ``ebs`` (volumes and
snapshots), ``provider`` (``AWSProvider``: the Provider interface).
"""
