"""RunPod: on-demand pods over REST v2, spot pods over GraphQL, one client (``api``) and the
Provider on top (``provider``)."""
