"""Which base image a failed BuildKit build could not fetch (engine/_base_access.py)."""

from __future__ import annotations

from prefect_flyimage.engine._base_access import _failed_bases

METADATA_FAILURE = """\
#1 [internal] load build definition from Dockerfile
#1 DONE 0.0s
#2 [internal] load metadata for 127.0.0.1:5977/private/base:1
#2 ERROR: unexpected status from HEAD request to http://127.0.0.1:5977/v2/private/base/manifests/1: 403 Forbidden
------
 > [internal] load metadata for 127.0.0.1:5977/private/base:1:
------
ERROR: failed to solve: 127.0.0.1:5977/private/base:1: failed to resolve source metadata for 127.0.0.1:5977/private/base:1: unexpected status
""".splitlines()

PULL_FAILURE = """\
#2 [internal] load metadata for reg.example:5000/base:1
#2 DONE 0.1s
#3 [internal] load metadata for reg.example:5000/other:2
#3 DONE 0.1s
#4 [stage-1 1/2] FROM reg.example:5000/base:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
#5 [build 1/1] FROM reg.example:5000/other:2@sha256:1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
#4 ERROR: failed to copy: httpReadSeeker: failed open: unexpected status code 403 Forbidden
""".splitlines()

RUN_FAILURE = """\
#2 [internal] load metadata for reg.example:5000/base:1
#2 DONE 0.1s
#5 [2/2] RUN exit 3
#5 ERROR: process "/bin/sh -c exit 3" did not complete successfully: exit code: 3
""".splitlines()


def test_a_failed_metadata_load_names_its_base_once():
    assert _failed_bases(METADATA_FAILURE) == ["127.0.0.1:5977/private/base:1"]


def test_a_failed_pull_names_only_the_failed_steps_base():
    assert _failed_bases(PULL_FAILURE) == [
        "reg.example:5000/base:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    ]


def test_a_failed_run_step_names_no_base():
    assert _failed_bases(RUN_FAILURE) == []
