"""Lyceum Cloud: VMs over the ``/api/v2/external`` REST API (``api``) and the Provider on top
(``provider``)."""
