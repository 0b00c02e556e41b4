"""Rendering: docker-pkg's filters and StrictUndefined, errors naming the folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_flyimage.chain.errors import TreeSpecError
from prefect_flyimage.chain.templates import TemplateRenderer, apt_install, apt_remove, split_label, upstream_version
from prefect_flyimage.errors import SpecError


def test_apt_install_without_proxy_matches_docker_pkg_output():
    text = apt_install("curl\nvim", {"apt_options": "-o Foo=1"})
    assert text == (
        "apt-get update -o Foo=1 \\\n"
        "    && DEBIAN_FRONTEND=noninteractive \\\n"
        "    apt-get install -o Foo=1 --yes curl vim --no-install-recommends \\\n"
        "    && apt-get clean && rm -rf /var/lib/apt/lists/* "
    )


def test_apt_install_with_proxy_writes_and_removes_the_proxy_config():
    text = apt_install("curl", {"apt_options": "", "apt_only_proxy": "http://proxy:8080"})
    lines = text.split("\n")
    assert lines[0] == "echo 'Acquire::http::Proxy \"http://proxy:8080\";' > /etc/apt/apt.conf.d/80_proxy \\"
    assert "    && rm -f /etc/apt/apt.conf.d/80_proxy \\" in lines
    assert lines[-1].endswith("/var/lib/apt/lists/* ")


def test_apt_remove_with_and_without_proxy():
    assert apt_remove("vim", {}).startswith("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get remove --yes --purge vim \\\n")
    proxied = apt_remove("vim", {"apt_only_proxy": "http://p"})
    assert proxied.startswith("echo 'Acquire::http::Proxy \"http://p\";' > /etc/apt/apt.conf.d/80_proxy  && \\apt-get update")


@pytest.mark.parametrize(
    "label, expected",
    [("img:1.63.0-1", "1.63.0"), ("img:1.63.0-1-20241211", "1.63.0"), ("img:2.0", "2.0"),
     ("127.0.0.1:5000/ns/img:3.1-1", "3.1")],
)
def test_upstream_version(label, expected):
    assert upstream_version(label) == expected


def test_upstream_version_needs_an_image_name():
    with pytest.raises(ValueError, match="no image name"):
        upstream_version("1.0-1")


def test_split_label_understands_registry_ports():
    assert split_label("127.0.0.1:5000/ns/img:1.0") == ("127.0.0.1:5000/ns/img", "1.0")
    assert split_label("127.0.0.1:5000/ns/img") == ("127.0.0.1:5000/ns/img", None)


def test_image_tag_finds_tree_and_base_images_including_registries_with_ports():
    cfg = {"registry": "127.0.0.1:5000", "namespace": "team", "base_images": ["127.0.0.1:5000/team/debian:12"]}
    r = TemplateRenderer(cfg, {"127.0.0.1:5000/team/app": "127.0.0.1:5000/team/app:2.0"})
    assert r.image_tag("app") == "127.0.0.1:5000/team/app:2.0"
    assert r.image_tag("debian") == "127.0.0.1:5000/team/debian:12"
    with pytest.raises(ValueError, match="127.0.0.1:5000/team/nope not found"):
        r.image_tag("nope")


def test_uid_and_add_user():
    r = TemplateRenderer({"known_uid_mappings": {"www-data": 33}})
    assert r.uid("www-data") == "33"
    assert r.uid("stranger") == "stranger"
    assert r.add_user("www-data") == (
        "groupadd -o -g 33 -r www-data && useradd -l -o -r -m -d /var/lib/www-data -g www-data -u 33 www-data"
    )
    with pytest.raises(ValueError, match="No mapping found for user 'stranger'"):
        r.add_user("stranger")


def _folder(tmp_path: Path, template: str) -> Path:
    (tmp_path / "Dockerfile.template").write_text(template)
    return tmp_path


def test_render_passes_config_as_variables_and_drops_the_final_newline(tmp_path):
    folder = _folder(tmp_path, "FROM {{ seed }}\n{% do [].append(1) %}RUN true\n")
    assert TemplateRenderer({"seed": "busybox:1"}).render(folder) == "FROM busybox:1\nRUN true"


def test_undefined_variable_is_a_typed_error_naming_folder_and_line(tmp_path):
    folder = _folder(tmp_path, "FROM base\n\nRUN echo {{ not_configured }}\n")
    with pytest.raises(TreeSpecError) as info:
        TemplateRenderer({}).render(folder, "img")
    err = info.value
    assert isinstance(err, SpecError)
    (problem,) = err.issues
    assert problem.kind == "template" and problem.folders == (str(folder),) and problem.image == "img"
    assert "line 3" in problem.message and "not_configured" in problem.message


def test_syntax_error_and_filter_error_are_template_problems(tmp_path):
    with pytest.raises(TreeSpecError, match="syntax error"):
        TemplateRenderer({}).render(_folder(tmp_path, "FROM {{ base \n"))
    with pytest.raises(TreeSpecError, match="Image other not found"):
        TemplateRenderer({}).render(_folder(tmp_path, 'FROM {{ "other" | image_tag }}\n'))


def test_template_errors_never_show_the_registry_password(tmp_path):
    cfg = {"password": "s3cr3t-pw", "registry": "r.example"}
    folder = _folder(tmp_path, "{{ password ~ missing }}")
    with pytest.raises(TreeSpecError) as info:
        TemplateRenderer(cfg).render(folder)
    assert "s3cr3t-pw" not in str(info.value)


def test_renderers_do_not_share_state(tmp_path):
    # docker-pkg kept filters and known images on the class; ours are per tree.
    folder = _folder(tmp_path, '{{ "a" | image_tag }}')
    one = TemplateRenderer({}, {"a": "a:1"})
    two = TemplateRenderer({}, {"a": "a:2"})
    assert (one.render(folder), two.render(folder)) == ("a:1", "a:2")
