"""The mapping file: the default loads, and every kind of mistake fails before any work with a
ConfigError naming the file, the key path and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.errors import ConfigError
from etl.mapping import load_mapping
from etl.target import columns
from tests.helpers import REPO

DEFAULT = REPO / "configs" / "atspro.toml"


@pytest.fixture(scope="module")
def default_text() -> str:
    return DEFAULT.read_text()


def test_mapping_default_loads():
    m = load_mapping(DEFAULT)
    assert m.version == "atspro-1"
    assert list(m.collections_in_order()) == [
        "resumes",
        "jobs",
        "documents",
        "job_research",
        "task_results",
    ]
    assert m.order == ("resumes", "jobs", "documents", "job_research", "task_results")
    assert m.on_dangling_reference == "null"
    assert m.nul_in_strings == "reject" and m.lone_surrogates == "reject"
    # task_results is a generic table: arango.task_results
    tr = m.for_collection("task_results").generic
    assert (tr.table, tr.edge) == ("arango.task_results", False)
    assert m.target_tables("task_results")[0].key_column == "key"
    assert m.for_collection("no_such_collection") is None
    assert m.for_collection("resumes").target.document_type == "resume"
    docs = m.for_collection("documents")
    assert docs.route_on == ("type",)
    assert set(docs.routes) == {"optimization", "research"}
    edge = m.for_collection("job_research").edge
    assert (edge.from_collection, edge.to_collection, edge.to_document_type, edge.sets) == (
        "jobs",
        "documents",
        "research",
        "job_id",
    )
    assert sorted(m.document_types()) == [
        "arango.task_results", "job", "optimization", "research", "resume"
    ]  # fmt: skip


def test_mapping_paths_are_precompiled_in_order():
    t = load_mapping(DEFAULT).for_collection("resumes").target
    filename = next(c for c in t.columns if c.name == "filename")
    assert filename.paths == (("file_metadata", "filename"), ("filename",), ("file_name",))
    assert filename.default == "unknown"
    assert t.parsed_data == ("resume_data", "parsed_data", "content")
    assert t.sections == ("contact_info", "summary", "experience", "education", "skills")
    assert t.columns[0].name == "user_id"  # table order, user_id first


def test_mapping_columns_per_document_type():
    assert columns("resume") == (
        "id",
        "user_id",
        "filename",
        "content_type",
        "file_size",
        "file_hash",
        "status",
        "source",
        "task_id",
        "error_message",
        "created_at",
        "updated_at",
        "is_active",
        "expires_at",
        "deleted_at",
        "parsed_data",
        "metadata",
    )
    assert columns("research")[:4] == ("id", "user_id", "job_id", "resume_id")
    assert load_mapping(DEFAULT).columns("job")[-2:] == ("parsed_data", "metadata")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "broken.toml"
    p.write_text(text)
    return p


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old  # the default file must still contain what the test edits
    return text.replace(old, new, 1)


# (old text, new text, expected key path, expected words of the problem)
BROKEN = [
    pytest.param(
        'kind = "generic"',
        'kind = "table"',
        "collections.task_results.kind",
        "'document'",
        id="unknown-collection-kind",
    ),
    pytest.param(
        'document_type = "resume"',
        'document_type = "cv"',
        "collections.resumes.document_type",
        "unknown document type 'cv'",
        id="unknown-document-type",
    ),
    pytest.param(
        'content_type = ["file_metadata.content_type", "content_type"]',
        'mime_type = ["file_metadata.content_type"]',
        "collections.resumes.columns.mime_type",
        "unknown target column",
        id="unknown-target-column",
    ),
    pytest.param(
        'location = ["location"]',
        'location = ["location..city"]',
        "collections.jobs.columns.location.paths[0]",
        "bad path syntax",
        id="bad-path-syntax",
    ),
    pytest.param(
        'title = ["job_title", "title"]',
        'title = ["job title"]',
        "collections.jobs.columns.title.paths[0]",
        "bad path syntax",
        id="path-with-space",
    ),
    pytest.param(
        'parsed_data = ["resume_data", "parsed_data", "content"]',
        'parsed_data = ["resume_data.inner"]',
        "collections.resumes.parsed_data[0]",
        "top-level",
        id="nested-parsed-data",
    ),
    pytest.param(
        'mapping_version = "atspro-1"',
        'mapping_version = "atspro-1"\nbatch = 3',
        "batch",
        "unknown key",
        id="unknown-top-level-key",
    ),
    pytest.param(
        'on_dangling_reference = "null"',
        'on_dangling_reference = "ignore"',
        "policy.on_dangling_reference",
        "'null' or 'reject'",
        id="bad-policy-value",
    ),
    pytest.param(
        'nul_in_strings = "reject"',
        'nul_in_strings = "drop"',
        "policy.nul_in_strings",
        "'strip'",
        id="bad-nul-policy",
    ),
    pytest.param(
        'resume_id = { paths = ["resume_id"], collection = "resumes" }',
        'resume_id = { paths = ["resume_id"], collection = "cvs" }',
        "collections.documents.references.resume_id.collection",
        "unknown or unmapped collection 'cvs'",
        id="reference-to-unknown-collection",
    ),
    pytest.param(
        'resume_id = { paths = ["resume_id"], collection = "resumes" }',
        'resume_id = { paths = ["resume_id"], collection = "task_results" }',
        "collections.documents.references.resume_id.collection",
        "'task_results' is a generic collection",
        id="reference-to-generic-collection",
    ),
    pytest.param(
        'from_collection = "jobs"',
        'from_collection = "employers"',
        "collections.job_research.from_collection",
        "'employers' is not a mapped document collection",
        id="edge-from-unknown-collection",
    ),
    pytest.param(
        'sets = "job_id"',
        'sets = "company"',
        "collections.job_research.sets",
        "not a reference column",
        id="edge-sets-non-reference",
    ),
    pytest.param(
        'order = ["resumes", "jobs", "documents", "job_research"]',
        'order = ["resumes", "jobs", "documents"]',
        "policy.order",
        "'job_research' is missing",
        id="order-missing-collection",
    ),
    pytest.param(
        'order = ["resumes", "jobs", "documents", "job_research"]',
        'order = ["resumes", "jobs", "job_research", "documents"]',
        "policy.order",
        "must come after 'documents'",
        id="order-edge-before-end",
    ),
    pytest.param(
        'order = ["resumes", "jobs", "documents", "job_research"]',
        'order = ["documents", "resumes", "jobs", "job_research"]',
        "policy.order",
        "must come before 'documents'",
        id="order-reference-before-target",
    ),
    pytest.param(
        'order = ["resumes", "jobs", "documents", "job_research"]',
        'order = ["resumes", "jobs", "documents", "job_research", "photos"]',
        "policy.order[4]",
        "unknown collection 'photos'",
        id="order-unknown-collection",
    ),
    pytest.param(
        'file = ["file_metadata"]',
        'extra = ["file_metadata"]',
        "collections.resumes.metadata.extra",
        "reserved metadata key",
        id="reserved-metadata-name",
    ),
    pytest.param(
        'filename = { paths = ["file_metadata.filename", "filename", "file_name"], default = "unknown" }',
        'filename = { paths = ["file_metadata.filename"], default = 7 }',
        "collections.resumes.columns.filename.default",
        "does not fit",
        id="default-does-not-fit",
    ),
    pytest.param(
        'filename = { paths = ["file_metadata.filename", "filename", "file_name"], default = "unknown" }',
        'filename = { paths = ["file_metadata.filename"], fallback = "x" }',
        "collections.resumes.columns.filename.fallback",
        "unknown key",
        id="unknown-column-option",
    ),
    pytest.param(
        '[collections.resumes.columns]\nuser_id = ["user_id", "userId"]',
        "[collections.resumes.columns]",
        "collections.resumes.columns.user_id",
        "required",
        id="missing-user-id-column",
    ),
    pytest.param(
        'content = ["content"]\nstatus = ["status"]\ntask_id = ["task_id"]\noptimization_type',
        'content = ["content"]\nresume_id = ["resume_id"]\nstatus = ["status"]\ntask_id = ["task_id"]\noptimization_type',
        "collections.documents.routes.optimization.columns.resume_id",
        "map it under references",
        id="reference-column-under-columns",
    ),
    pytest.param(
        'to_document_type = "research"',
        'to_document_type = "research"\nparsed_data = ["x"]',
        "collections.job_research.parsed_data",
        "not allowed for an edge collection",
        id="field-not-allowed-for-kind",
    ),
    pytest.param(
        'route_on = "type"',
        'route_on = "type"\ndocument_type = "resume"',
        "collections.documents.document_type",
        "not allowed",
        id="route-and-document-type",
    ),
    pytest.param(
        'kind = "generic"\ntable',
        'kind = "generic"\ndocument_type = "resume"\ntable',
        "collections.task_results.document_type",
        "not allowed",
        id="generic-with-target",
    ),
    pytest.param(
        'list_fields = [\n  "requirements"',
        'list_fields = [\n  "requirements[][]"',
        "collections.jobs.list_fields[0]",
        "bad path syntax",
        id="bad-list-path",
    ),
]


@pytest.mark.parametrize("old,new,key,problem", BROKEN)
def test_mapping_invalid_file_names_file_key_and_problem(
    tmp_path, default_text, old, new, key, problem
):
    path = _write(tmp_path, _edit(default_text, old, new))
    with pytest.raises(ConfigError) as err:
        load_mapping(path)
    msg = str(err.value)
    assert msg.startswith(f"mapping file {path}: key '{key}': "), msg
    assert problem in msg, msg


def test_mapping_toml_syntax_error_names_file(tmp_path):
    path = _write(tmp_path, 'mapping_version = "x"\n[collections.resumes\n')
    with pytest.raises(ConfigError, match=r"mapping file .*broken\.toml: cannot be read: .*line 2"):
        load_mapping(path)


def test_mapping_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"mapping file .*nope\.toml does not exist"):
        load_mapping(tmp_path / "nope.toml")


def test_mapping_missing_version_and_collections(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'mapping_version': Field required"):
        load_mapping(_write(tmp_path, "[collections.x]\nkind = 'unmapped'\n"))
    with pytest.raises(ConfigError, match=r"key 'collections': Field required"):
        load_mapping(_write(tmp_path, "mapping_version = 'v'\n"))


def test_mapping_minimal_operator_file(tmp_path):
    """An operator's own mapping for another layout: one collection, shorthand path lists."""
    path = _write(
        tmp_path,
        """
mapping_version = "mine-1"
[policy]
order = ["cvs"]
nul_in_strings = "escape"
[collections.cvs]
kind = "document"
document_type = "resume"
parsed_data = "body"
[collections.cvs.columns]
user_id = ["owner"]
filename = { paths = ["name"], default = "cv" }
""",
    )
    m = load_mapping(path)
    assert m.version == "mine-1" and m.nul_in_strings == "escape"
    t = m.for_collection("cvs").target
    assert t.parsed_data == ("body",)
    assert [c.name for c in t.columns] == ["user_id", "filename"]
