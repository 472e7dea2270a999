"""The security tests attack the running app as a hostile team member, annotator,
teacher endpoint or file would (docs/security.md); they share the web tests' personas."""

from tests.webapp.conftest import (  # noqa: F401
    _data_dir,
    _fast_password_hashing,
    _fresh_cache,
    celery_worker,
    gpu_node,
    importer,
    login,
    personas,
)
