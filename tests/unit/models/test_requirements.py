"""A job's requirements: what a requirements.txt lists, and what is refused (pip options, limits)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nubis.models.jobs import JobSpec
from nubis.models.requirements import (
    MAX_REQUIREMENTS,
    check_requirements,
    parse_requirements,
    requirement_name,
)


def test_a_requirements_file_gives_one_requirement_per_line() -> None:
    text = (
        "# training extras\n"
        "\n"
        "termcolor>=2.0  # colours\n"
        "lightning[extra] == 2.4.0\n"
        "rich ; python_version >= \"3.10\"\n"
        "tiny @ https://example.invalid/tiny-1.0-py3-none-any.whl\n"
        "numpy>=1.26,\\\n"
        "   <3\n"
        "termcolor>=2.0\n"
    )
    assert parse_requirements(text) == [
        "termcolor>=2.0", "lightning[extra] == 2.4.0", "rich ; python_version >= \"3.10\"",
        "tiny @ https://example.invalid/tiny-1.0-py3-none-any.whl", "numpy>=1.26, <3",
    ]
    assert parse_requirements("") == []
    assert requirement_name("lightning[extra] == 2.4.0") == "lightning"


@pytest.mark.parametrize(("line", "why"), [
    ("-r other.txt", "pip options are not supported"),
    ("--index-url https://evil.invalid/simple", "pip options are not supported"),
    ("-e .", "pip options are not supported"),
    ("torch==2.13.0 --hash=sha256:abc", "pip options are not supported"),
    ("./local/pkg", "is not a requirement"),
    ("/abs/path/pkg.whl", "is not a requirement"),
    ("https://example.invalid/x.whl", "is not a requirement"),
    ("name with spaces", "is not a requirement"),
])
def test_what_is_not_a_plain_requirement_is_refused_with_its_line(line: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        parse_requirements(f"ok-package\n{line}\n", source="reqs.txt")
    assert str(caught.value).startswith("reqs.txt, line 2: ")


def test_limits_on_count_length_and_size() -> None:
    check_requirements([f"p{i}" for i in range(MAX_REQUIREMENTS)])
    with pytest.raises(ValueError, match=f"at most {MAX_REQUIREMENTS}"):
        parse_requirements("\n".join(f"p{i}" for i in range(MAX_REQUIREMENTS + 1)))
    with pytest.raises(ValueError, match="longer than 512 characters"):
        check_requirements(["p" * 513])
    with pytest.raises(ValueError, match="over 64 KiB"):
        parse_requirements("# " + "x" * 64 * 1024)
    with pytest.raises(ValueError, match="ends in a line continuation"):
        parse_requirements("numpy>=1,\\\n")


def test_the_job_spec_checks_its_requirements() -> None:
    spec = JobSpec(command=["python", "x.py"], requirements=["termcolor"])
    assert spec.requirements == ["termcolor"]
    with pytest.raises(ValidationError, match="pip options are not supported"):
        JobSpec(command=["python", "x.py"], requirements=["--extra-index-url=https://x.invalid"])
    with pytest.raises(ValidationError, match="is not a requirement"):
        JobSpec(command=["python", "x.py"], requirements=["ok\nmore"])
