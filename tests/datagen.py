"""Realistic ATSPro source data of any size, deterministic from a seed.

Shared by the tests, `make demo` and the benchmark. Nothing is held in memory: a `Dataset` is a
recipe; iterating one collection regenerates its documents from the seed, and every reference
(`resume_id`, `job_id`, `_from`, `_to`) is computed from the referenced document's index, so no
lookup tables are kept either.

    ds = generate(1000, seed=7)                    # a Dataset
    for doc in ds["resumes"]: ...                  # re-iterable, same documents every time
    write_dump(out_dir, ds, gzip=True)             # arangodump directory (see the format spec)
    write_jsonl(out_dir, ds)                       # arangoexport jsonl files

Shapes follow docs/shared spec source-data.md. `generate(..., bad=True)` mixes in every bad-input
case of that spec's last section; `bad_cases()` lists them as (collection, doc, case_name), and
each bad document's `_key` starts with `bad-` followed by its case name (tests find them by key).

CLI: `python -m tests.datagen --resumes N --out DIR [--format dump|jsonl] [--bad]`.
"""

from __future__ import annotations

import argparse
import functools
import gzip as _gzip
import hashlib
import json
import random
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import msgspec

COLLECTIONS: tuple[str, ...] = ("resumes", "jobs", "documents", "job_research", "task_results")
EDGE_COLLECTIONS = frozenset({"job_research"})
DATABASE = "atspro"
ALLOWED_KEY_SPECIALS = "_-:.@()+,=;$!*'%"

_REV_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_KEY_BASE = {
    "resumes": 1_000_000,
    "jobs": 2_000_000,
    "documents": 3_000_000,
    "job_research": 4_000_000,
    "task_results": 5_000_000,
}

_WORDS = (
    "managed designed built led improved reduced delivered scalable distributed platform team "
    "customer revenue pipeline data analytics python java kubernetes cloud migration latency "
    "service api product roadmap stakeholders budget quarterly growth automation testing "
    "security compliance reporting dashboard mentoring hiring architecture reliability cost "
    "performance integration onboarding strategy research design documentation release"
).split()
_FIRST = (
    "Ann Bob Carla Deepak Elena Farid Grace Hiro Ines Jamal Kofi Lena Mateo Nora Omar Priya".split()
)
_LAST = "Smith Okafor Müller Tanaka Silva Kowalski Nguyen Haddad Rossi Dubois Jensen Patel".split()
_COMPANIES = (
    "Acme Globex Initech Umbrella Hooli Stark Wayne Wonka Cyberdyne Soylent Vandelay".split()
)
_TITLES = (
    "Software Engineer",
    "Data Scientist",
    "Product Manager",
    "DevOps Engineer",
    "Backend Developer",
    "QA Analyst",
    "Engineering Manager",
    "UX Designer",
)
_SKILLS = (
    "Python",
    "SQL",
    "PostgreSQL",
    "ArangoDB",
    "Docker",
    "Kubernetes",
    "React",
    "Go",
    "Terraform",
    "AWS",
    "GCP",
    "Kafka",
    "Spark",
    "TypeScript",
    "Rust",
    "Linux",
)


# ---------------------------------------------------------------------------------- helpers


def _rng(seed: int, collection: str, salt: str = "") -> random.Random:
    return random.Random(f"{seed}:{collection}:{salt}")


def _rev(rng: random.Random) -> str:
    return "_" + "".join(rng.choice(_REV_ALPHABET) for _ in range(10))


def key_for(collection: str, i: int) -> str:
    """The `_key` of document number i of a collection (pure: references use it too).

    Mostly numeric strings as ArangoDB's traditional key generator makes them; every 97th key
    uses the special characters ArangoDB allows.
    """
    n = _KEY_BASE[collection] + i * 7
    if i % 97 == 13:
        return f"k{n}:a.b@c(d)+e,f=g;h$i!j*k'l%m_-"
    return str(n)


def _sentence(rng: random.Random, lo: int = 6, hi: int = 16) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))]
    return " ".join(words).capitalize() + "."


def _ts(rng: random.Random, year: int = 2025) -> str:
    return (
        f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
        f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}"
    )


def _user(rng: random.Random) -> str:
    return "user_" + "".join(rng.choice(_REV_ALPHABET[:62]) for _ in range(8))


def _counts(
    n_resumes: int,
    jobs_per_resume: float,
    optimizations_per_resume: float,
    research_per_job: float,
    other_documents_per_resume: float,
    task_results_per_resume: float,
) -> dict[str, int]:
    n_jobs = round(n_resumes * jobs_per_resume)
    return {
        "resumes": n_resumes,
        "jobs": n_jobs,
        "optimizations": round(n_resumes * optimizations_per_resume),
        "research": round(n_jobs * research_per_job),
        "other": round(n_resumes * other_documents_per_resume),
        "task_results": round(n_resumes * task_results_per_resume),
    }


# ---------------------------------------------------------------------------------- shapes


def _resume_data(rng: random.Random, big: bool) -> dict:
    name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    n_jobs = rng.randint(8, 30) if big else rng.randint(1, 4)
    n_resp = rng.randint(20, 60) if big else rng.randint(2, 6)
    work = []
    for j in range(n_jobs):
        current = j == 0 and rng.random() < 0.5
        work.append(
            {
                "company": rng.choice(_COMPANIES) + " " + rng.choice(("Inc", "GmbH", "Ltd", "LLC")),
                "position": rng.choice(_TITLES),
                "start_date": str(rng.randint(2005, 2024)),
                "end_date": None if current else str(rng.randint(2006, 2025)),
                "is_current": current,
                "description": None if rng.random() < 0.5 else _sentence(rng, 10, 30),
                "responsibilities": [_sentence(rng) for _ in range(n_resp)],
                "skills": rng.sample(_SKILLS, rng.randint(1, 5)),
            }
        )
    return {
        "contact_info": {
            "full_name": name,
            "email": name.lower().replace(" ", ".").replace("ü", "ue") + "@example.com",
            "phone": f"+1-555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
            "address": f"{rng.randint(1, 999)} Main St, Springfield",
            "links": [f"https://linkedin.com/in/{rng.randint(1000, 99999)}"]
            if rng.random() < 0.6
            else [],
        },
        "summary": None
        if rng.random() < 0.2
        else " ".join(_sentence(rng) for _ in range(rng.randint(1, 4))),
        "work_experience": work,
        "education": [
            {
                "institution": f"University of {rng.choice(_LAST)}",
                "degree": rng.choice(("BSc", "MSc", "PhD", "BA")),
                "field_of_study": rng.choice(("Computer Science", "Mathematics", "Economics")),
                "graduation_date": str(rng.randint(2000, 2022)),
                "gpa": None if rng.random() < 0.7 else round(rng.uniform(2.5, 4.0), 2),
            }
            for _ in range(rng.randint(1, 2))
        ],
        "certifications": [
            {
                "name": f"{rng.choice(_SKILLS)} Certified",
                "issuer": rng.choice(_COMPANIES),
                "date_obtained": str(rng.randint(2015, 2025)),
            }
            for _ in range(rng.randint(0, 3))
        ],
        "skills": rng.sample(_SKILLS, rng.randint(3, 10)),
    }


def _resume(seed: int, i: int) -> dict:
    rng = _rng(seed, "resumes", str(i))
    key = key_for("resumes", i)
    big = rng.random() < 0.01
    data = _resume_data(rng, big)
    created = _ts(rng)
    fname = rng.choice(
        ("cv.pdf", "resume.docx", "Lebenslauf_2025.pdf", "my resume (final).pdf", "cv.txt")
    )
    ctype = {
        "pdf": "application/pdf",
        "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "txt": "text/plain",
    }[fname.rsplit(".", 1)[1]]
    doc: dict = {"_key": key, "_id": f"resumes/{key}", "_rev": _rev(rng), "user_id": _user(rng)}
    shape = rng.random()
    if shape < 0.80:  # current shape
        doc["file_metadata"] = {
            "filename": fname,
            "content_type": ctype,
            "size": rng.randint(20_000, 5_000_000),
            "processed_at": created,
        }
        doc["resume_data"] = data
        doc["status"] = "completed"
        doc["task_id"] = f"task_{rng.getrandbits(64):016x}"
    elif shape < 0.88:  # older: parsed_data, filename at top level
        doc["filename"] = fname
        doc["parsed_data"] = data
        doc["status"] = rng.choice(("completed", "processing", "failed"))
    elif shape < 0.94:  # older: content, file_name
        doc["file_name"] = fname
        doc["content"] = data
        doc["status"] = "completed"
    else:  # oldest: sections at top level, no filename at all
        doc["contact_info"] = data["contact_info"]
        doc["summary"] = data["summary"]
        doc["experience"] = data["work_experience"]
        doc["education"] = data["education"]
        doc["skills"] = data["skills"]
    doc["created_at"] = created
    doc["updated_at"] = created if rng.random() < 0.7 else _ts(rng)
    return doc


def _job(seed: int, i: int) -> dict:
    rng = _rng(seed, "jobs", str(i))
    key = key_for("jobs", i)
    title, company = rng.choice(_TITLES), rng.choice(_COMPANIES)
    from_url = rng.random() < 0.5
    created = _ts(rng)
    doc: dict = {
        "_key": key,
        "_id": f"jobs/{key}",
        "_rev": _rev(rng),
        "user_id": _user(rng),
        "type": "job",
        "status": rng.choice(("pending", "completed", "completed")),
        "source_url": f"https://jobs.example.com/{rng.randint(1, 10**6)}" if from_url else "",
        "source_type": "url" if from_url else "document",
    }
    if not from_url:
        doc["source_filename"] = rng.choice(("job.md", "posting.txt", "jd.pdf"))
    variant = rng.random()
    empty = rng.random() < 0.15  # the parser found nothing: empty strings stay empty
    if variant < 0.85:
        doc["company_name"] = "" if empty else company
        doc["job_title"] = "" if empty else title
        doc["job_url"] = "" if empty or not from_url else doc["source_url"]
        doc["remote_type"] = rng.choice((None, "remote", "hybrid", "onsite"))
    else:  # older attribute names
        doc["company"] = company
        doc["title"] = title
        doc["url"] = doc["source_url"]
        doc["work_type"] = rng.choice(("remote", "hybrid", "onsite"))
    doc["location"] = "" if empty else rng.choice(("Berlin", "Remote", "New York, NY", "London"))
    doc["is_active"] = rng.random() < 0.9
    doc["parsed_data"] = {
        "description": "" if empty else _sentence(rng, 8, 20),
        "requirements": [] if empty else [_sentence(rng, 3, 6) for _ in range(rng.randint(1, 3))],
        "qualifications": [] if empty else [_sentence(rng, 3, 5)],
        "benefits": [] if empty else rng.sample(("401k", "remote", "equity", "gym"), 2),
        "skills": [] if empty else rng.sample(_SKILLS, 3),
        "keywords": [] if empty else rng.sample(_WORDS, 3),
    }
    doc["created_at"] = created
    doc["updated_at"] = created
    return doc


def _optimization(seed: int, i: int, key: str, n_resumes: int, n_jobs: int) -> dict:
    rng = _rng(seed, "documents-opt", str(i))
    r = rng.randrange(max(n_resumes, 1))
    j = rng.randrange(max(n_jobs, 1))
    doc: dict = {
        "_key": key,
        "_id": f"documents/{key}",
        "_rev": _rev(rng),
        "type": "optimization",
        "task_id": f"task_{rng.getrandbits(64):016x}",
        "user_id": _user(rng),
        "resume_id": key_for("resumes", r),
        "job_id": key_for("jobs", j),
    }
    summary = " ".join(_sentence(rng) for _ in range(rng.randint(2, 5)))
    doc["content"] = (
        "# Optimized resume\n\n## Summary\n\n"
        + summary
        + "\n\n## Experience\n\n"
        + "\n".join("- " + _sentence(rng) for _ in range(rng.randint(4, 12)))
    )
    doc["optimized_data"] = {
        "summary": summary,
        "skills": rng.sample(_SKILLS, 5),
        "changes": [_sentence(rng, 4, 8) for _ in range(rng.randint(1, 4))],
    }
    style = rng.random()
    if style < 0.5:
        doc["ats_score"] = rng.randint(40, 99)
        doc["keyword_match_score"] = round(rng.uniform(0, 100), 1)
    elif style < 0.8:
        doc["atsScore"] = rng.randint(40, 99)
        doc["keywordScore"] = rng.randint(0, 100)
    doc["created_at"] = _ts(rng)
    doc["status"] = "completed"
    return doc


def _research(seed: int, i: int, key: str, n_resumes: int, job_index: int) -> dict:
    rng = _rng(seed, "documents-res", str(i))
    company = rng.choice(_COMPANIES)
    paragraphs = [_sentence(rng, 15, 40) for _ in range(rng.randint(3, 8))]
    content = f"# {company} company research\n\n" + "\n\n".join(paragraphs)
    return {
        "_key": key,
        "_id": f"documents/{key}",
        "_rev": _rev(rng),
        "type": "research",
        "task_id": f"task_{rng.getrandbits(64):016x}",
        "user_id": _user(rng),
        "resume_id": key_for("resumes", rng.randrange(max(n_resumes, 1))),
        "job_id": key_for("jobs", job_index),
        "content": content,
        "company": company,
        "job_title": rng.choice(_TITLES),
        "created_at": _ts(rng),
        "status": "completed",
        "metadata": {
            "content_type": "markdown",
            "report_type": "company_research",
            "word_count": len(content.split()),
        },
    }


def _other_document(seed: int, i: int, key: str) -> dict:
    rng = _rng(seed, "documents-other", str(i))
    return {
        "_key": key,
        "_id": f"documents/{key}",
        "_rev": _rev(rng),
        "type": rng.choice(("cover_letter", "interview_prep", "draft")),
        "user_id": _user(rng),
        "content": _sentence(rng, 20, 60),
        "created_at": _ts(rng),
    }


# ---------------------------------------------------------------------------------- bad cases


def _bad(collection: str, case: str, **fields) -> tuple[str, dict, str]:
    key = fields.pop("_key", None) or f"bad-{case}"
    doc = {
        "_key": key,
        "_id": f"{collection}/{key}",
        "_rev": "_bad" + hashlib.md5(case.encode()).hexdigest()[:7],
    }
    doc.update(fields)
    return collection, doc, case


def _nested(depth: int) -> dict:
    node: dict = {"leaf": True}
    for level in range(depth - 1):
        node = {"level": depth - 1 - level, "child": node}
    return node


@functools.lru_cache(maxsize=4)
def _big_text(seed: int) -> str:
    rng = _rng(seed, "bad-big")
    return "".join(_sentence(rng, 12, 24) + " " for _ in range(30_000))  # ~3-4 MB


def bad_cases(seed: int = 0) -> list[tuple[str, dict, str]]:
    """Every bad-input case of source-data.md, as (collection, doc, case_name).

    Each doc's `_key` is `bad-<case_name>` (except `key_all_allowed_chars`, whose key is itself
    the case). References point at generated documents 0 (`key_for`), which exist whenever the
    data set has at least one resume and one job.
    """
    rng = _rng(seed, "bad")
    base = _resume(seed, 0)
    rd = base.get("resume_data") or _resume_data(rng, False)

    def resume(case: str, **over) -> tuple[str, dict, str]:
        fields = {
            "user_id": "user_bad",
            "file_metadata": {
                "filename": "cv.pdf",
                "content_type": "application/pdf",
                "size": 1234,
                "processed_at": "2025-08-16T21:54:43.160344",
            },
            "resume_data": rd,
            "status": "completed",
            "created_at": "2025-08-16T21:54:43.160344",
            "updated_at": "2025-08-16T21:54:43.160344",
        }
        fields.update(over)
        return _bad("resumes", case, **fields)

    r0, j0 = key_for("resumes", 0), key_for("jobs", 0)
    big_text = _big_text(seed)
    out = [
        resume("user_id_missing", user_id=None),
        resume("user_id_empty", user_id=""),
        resume("user_id_number", user_id=12345),
        resume("nul_in_string", resume_data={**rd, "summary": "before\u0000after"}),
        resume("lone_surrogate", resume_data={**rd, "summary": "broken \ud800 surrogate"}),
        resume(
            "file_size_1e20",
            file_metadata={
                "filename": "cv.pdf",
                "content_type": "application/pdf",
                "size": 1e20,
                "processed_at": "2025-08-16T21:54:43",
            },
        ),
        resume("int_beyond_2_53", resume_data={**rd, "big": 2**53 + 1}),
        resume(
            "int_beyond_2_63",
            resume_data={
                **rd,
                "huge": 2**63 + 7,
                "huger": 2**64 + 5,
                "enormous": 123456789012345678901234567890,
            },
        ),
        resume("negative_zero", resume_data={**rd, "neg_zero": -0.0}),
        resume("float_1e308", resume_data={**rd, "max_float": 1e308}),
        resume("ts_with_zone", created_at="2025-08-16T21:54:43+02:00"),
        resume("ts_no_zone", created_at="2025-08-16T21:54:43"),
        resume("ts_epoch_ms", created_at=1755380083160),
        resume("ts_year_only", created_at="2019"),
        resume("ts_garbage", created_at="last tuesday-ish"),
        resume(
            "filename_over_255",
            file_metadata={
                "filename": "x" * 300 + ".pdf",
                "content_type": "application/pdf",
                "size": 10,
                "processed_at": "2025-08-16T21:54:43",
            },
        ),
        resume("list_field_holds_object", resume_data={**rd, "skills": {"primary": "Python"}}),
        resume("multi_mb_document", resume_data={**rd, "summary": big_text}),
        resume("nested_200_levels", resume_data={**rd, "deep": _nested(200)}),
        resume(
            "key_all_allowed_chars",
            _key="bad-key_all_allowed_chars" + ALLOWED_KEY_SPECIALS + "Az09",
        ),
        _bad(
            "documents",
            "score_250",
            type="optimization",
            user_id="user_bad",
            resume_id=r0,
            job_id=j0,
            content="# x",
            optimized_data={},
            ats_score=250,
            created_at="2025-08-16T21:54:43",
            status="completed",
        ),
        _bad(
            "documents",
            "type_routes_nowhere",
            type="horoscope",
            user_id="user_bad",
            content="stars",
            created_at="2025-08-16T21:54:43",
        ),
        _bad(
            "documents",
            "dangling_resume_id",
            type="optimization",
            user_id="user_bad",
            resume_id="no-such-resume-999",
            job_id=j0,
            content="# x",
            optimized_data={"a": 1},
            created_at="2025-08-16T21:54:43",
            status="completed",
        ),
        _bad(
            "job_research",
            "edge_from_unknown_collection",
            _from="companies/acme",
            _to=f"documents/{key_for('documents', 0)}",
            relationship="has_research",
            created_at="2025-08-16T21:54:43",
        ),
    ]
    return out


# ---------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class Dataset:
    """A deterministic recipe; `ds[collection]` regenerates that collection's documents."""

    n_resumes: int
    seed: int = 0
    jobs_per_resume: float = 1.0
    optimizations_per_resume: float = 1.0
    research_per_job: float = 0.5
    other_documents_per_resume: float = 0.02
    task_results_per_resume: float = 0.5
    bad: bool = False

    @property
    def counts(self) -> dict[str, int]:
        c = _counts(
            self.n_resumes,
            self.jobs_per_resume,
            self.optimizations_per_resume,
            self.research_per_job,
            self.other_documents_per_resume,
            self.task_results_per_resume,
        )
        out = {
            "resumes": c["resumes"],
            "jobs": c["jobs"],
            "documents": c["optimizations"] + c["research"] + c["other"],
            "job_research": c["research"],
            "task_results": c["task_results"],
        }
        if self.bad:
            for coll, _doc, _case in bad_cases(self.seed):
                out[coll] += 1
        return out

    @property
    def types(self) -> dict[str, str]:
        return {c: ("edge" if c in EDGE_COLLECTIONS else "document") for c in COLLECTIONS}

    def keys(self) -> tuple[str, ...]:
        return COLLECTIONS

    def __iter__(self) -> Iterator[str]:
        return iter(COLLECTIONS)

    def items(self) -> Iterator[tuple[str, Iterable[dict]]]:
        return ((c, self[c]) for c in COLLECTIONS)

    def __getitem__(self, collection: str) -> Iterable[dict]:
        if collection not in COLLECTIONS:
            raise KeyError(collection)
        return _Stream(self, collection)

    def _plan(self) -> dict[str, int]:
        return _counts(
            self.n_resumes,
            self.jobs_per_resume,
            self.optimizations_per_resume,
            self.research_per_job,
            self.other_documents_per_resume,
            self.task_results_per_resume,
        )

    def research_index(self) -> Iterator[tuple[int, int]]:
        """(document index, job index) of every research document, in order."""
        c = self._plan()
        total = c["optimizations"] + c["research"] + c["other"]
        r = 0
        for d in range(total):
            if self._doc_kind(d, c) == "research":
                yield d, (r * 2 + 1) % max(c["jobs"], 1)
                r += 1

    @staticmethod
    def _doc_kind(d: int, c: dict[str, int]) -> str:
        # research documents evenly spread over all indexes, "other" ones evenly over the rest
        total = c["optimizations"] + c["research"] + c["other"]
        n_res, n_oth = c["research"], c["other"]
        if n_res and ((d + 1) * n_res) // total > (d * n_res) // total:
            return "research"
        m, rest = d - (d * n_res) // total, total - n_res
        if n_oth and ((m + 1) * n_oth) // rest > (m * n_oth) // rest:
            return "other"
        return "optimization"

    def _generate(self, collection: str) -> Iterator[dict]:
        c = self._plan()
        s = self.seed
        if collection == "resumes":
            for i in range(c["resumes"]):
                yield _resume(s, i)
        elif collection == "jobs":
            for i in range(c["jobs"]):
                yield _job(s, i)
        elif collection == "documents":
            total = c["optimizations"] + c["research"] + c["other"]
            r = 0
            for d in range(total):
                key = key_for("documents", d)
                kind = self._doc_kind(d, c)
                if kind == "research":
                    yield _research(s, d, key, c["resumes"], (r * 2 + 1) % max(c["jobs"], 1))
                    r += 1
                elif kind == "other":
                    yield _other_document(s, d, key)
                else:
                    yield _optimization(s, d, key, c["resumes"], c["jobs"])
        elif collection == "job_research":
            for e, (d, j) in enumerate(self.research_index()):
                rng = _rng(s, "job_research", str(e))
                key = key_for("job_research", e)
                yield {
                    "_key": key,
                    "_id": f"job_research/{key}",
                    "_rev": _rev(rng),
                    "_from": f"jobs/{key_for('jobs', j)}",
                    "_to": f"documents/{key_for('documents', d)}",
                    "relationship": "has_research",
                    "created_at": _ts(rng),
                }
        elif collection == "task_results":
            for i in range(c["task_results"]):
                rng = _rng(s, "task_results", str(i))
                key = key_for("task_results", i)
                yield {
                    "_key": key,
                    "_id": f"task_results/{key}",
                    "_rev": _rev(rng),
                    "task_id": f"task_{rng.getrandbits(64):016x}",
                    "result": {
                        "ok": rng.random() < 0.9,
                        "duration_ms": rng.randint(100, 90_000),
                        "resume_id": key_for("resumes", rng.randrange(max(c["resumes"], 1))),
                    },
                    "created_at": _ts(rng),
                    "type": "task_result",
                }

    def iter_docs(self, collection: str) -> Iterator[dict]:
        gen = self._generate(collection)
        if not self.bad:
            yield from gen
            return
        bad = [d for coll, d, _case in bad_cases(self.seed) if coll == collection]
        # spread the bad docs: one after every `step` good docs, the rest at the end
        step = max(1, self._plan_count(collection) // (len(bad) + 1)) if bad else 0
        n = 0
        for doc in gen:
            yield doc
            n += 1
            if bad and n % step == 0:
                yield bad.pop(0)
        yield from bad

    def _plan_count(self, collection: str) -> int:
        c = self._plan()
        return {
            "resumes": c["resumes"],
            "jobs": c["jobs"],
            "documents": c["optimizations"] + c["research"] + c["other"],
            "job_research": c["research"],
            "task_results": c["task_results"],
        }[collection]


class _Stream:
    __slots__ = ("_ds", "_collection")

    def __init__(self, ds: Dataset, collection: str):
        self._ds, self._collection = ds, collection

    def __iter__(self) -> Iterator[dict]:
        return self._ds.iter_docs(self._collection)

    def __len__(self) -> int:
        return self._ds.counts[self._collection]


def generate(
    n_resumes: int,
    *,
    seed: int = 0,
    jobs_per_resume: float = 1.0,
    optimizations_per_resume: float = 1.0,
    research_per_job: float = 0.5,
    other_documents_per_resume: float = 0.02,
    task_results_per_resume: float = 0.5,
    bad: bool = False,
) -> Dataset:
    """A Dataset of about n_resumes * (1 + jobs + optimizations + ...) documents."""
    return Dataset(
        n_resumes,
        seed,
        jobs_per_resume,
        optimizations_per_resume,
        research_per_job,
        other_documents_per_resume,
        task_results_per_resume,
        bad,
    )


# ---------------------------------------------------------------------------------- writers

_encoder = msgspec.json.Encoder()


def encode(doc) -> bytes:
    """Compact JSON as arangodump writes it (lone surrogates as \\uXXXX escapes)."""
    try:
        return _encoder.encode(doc)
    except (UnicodeEncodeError, OverflowError, TypeError):
        return json.dumps(doc, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode()


def name_hash(name: str) -> str:
    return hashlib.md5(name.encode("utf-8")).hexdigest()


def _types_of(data, types: Mapping[str, str] | None) -> dict[str, str]:
    if types is not None:
        return dict(types)
    if isinstance(data, Dataset):
        return data.types
    return {c: ("edge" if c in EDGE_COLLECTIONS else "document") for c in data.keys()}


class _Out:
    """A (possibly gzipped) output file."""

    def __init__(self, path: Path, compress: bool):
        self.path = path
        self._f = _gzip.open(path, "wb", compresslevel=1) if compress else open(path, "wb")

    def write(self, b: bytes) -> None:
        self._f.write(b)

    def close(self) -> None:
        self._f.close()


def write_dump(
    out_dir,
    data,
    *,
    gzip: bool = True,
    envelope: bool = False,
    split_files: int = 0,
    plain_names: bool = False,
    version_style: str = "3.11",
    database: str = DATABASE,
    types: Mapping[str, str] | None = None,
) -> Path:
    """Write `data` (a Dataset or {collection: iterable of docs}) as an arangodump directory.

    gzip: `.data.json.gz` files (the default of arangodump 3.7-3.12).
    envelope: `{"type":2300,"data":doc}` lines (3.8's default) instead of plain documents.
    split_files: > 0 = at most that many documents per file, `<name>_<md5>.<n>.data.json[.gz]`.
    plain_names: `<name>.structure.json` (cluster style) and `<name>.data.json[.gz]` (legacy).
    version_style: "3.8" | "3.9" | "3.11" | "3.12" (dump.json keys, structure keys) or "legacy"
    (no ENCRYPTION file, no useEnvelope, indexes inside parameters).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if version_style != "legacy":
        (out / "ENCRYPTION").write_bytes(b"none")
    dump_json: dict = {
        "database": database,
        "lastTickAtDumpStart": "1790012345",
        "properties": {"id": "1017", "name": database, "isSystem": False, "path": "none"},
    }
    if version_style in ("3.8", "3.9", "3.10", "3.11"):
        dump_json["useEnvelope"] = bool(envelope)
    (out / "dump.json").write_bytes(encode(dump_json))
    ctypes = _types_of(data, types)
    for cid, (name, docs) in enumerate(data.items(), start=1021):
        h = name_hash(name)
        stem = name if plain_names else f"{name}_{h}"
        params: dict = {
            "name": name,
            "type": 3 if ctypes.get(name) == "edge" else 2,
            "id": str(cid),
            "cid": str(cid),
            "isSystem": False,
            "globallyUniqueId": f"h{h[:12]}/{cid}",
            "keyOptions": {"type": "traditional", "allowUserKeys": True, "lastValue": 0},
        }
        if version_style not in ("3.12", "legacy"):
            params.update({"numberOfShards": 1, "shardKeys": ["_key"]})
        idx: list = []
        structure = (
            {"parameters": {**params, "indexes": idx}}
            if version_style == "legacy"
            else {"indexes": idx, "parameters": params}
        )
        (out / f"{stem}.structure.json").write_bytes(encode(structure))
        ext = ".data.json.gz" if gzip else ".data.json"
        part, in_part = 0, 0
        f = _Out(out / (f"{stem}.0{ext}" if split_files else f"{stem}{ext}"), gzip)
        try:
            for doc in docs:
                if split_files and in_part >= split_files:
                    f.close()
                    part, in_part = part + 1, 0
                    f = _Out(out / f"{stem}.{part}{ext}", gzip)
                line = encode({"type": 2300, "data": doc}) if envelope else encode(doc)
                f.write(line + b"\n")
                in_part += 1
        finally:
            f.close()
    return out


def write_jsonl(out_dir, data, gzip: bool = False, *, fmt: str = "jsonl") -> Path:
    """Write `data` as arangoexport output: `<collection>.jsonl[.gz]` or, with fmt="json",
    `<collection>.json[.gz]` in arangoexport's `[\\n  doc,\\n  doc\\n]` layout."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ENCRYPTION").write_bytes(b"none")
    for name, docs in data.items():
        f = _Out(out / f"{name}.{fmt}{'.gz' if gzip else ''}", gzip)
        try:
            if fmt == "jsonl":
                for doc in docs:
                    f.write(encode(doc) + b"\n")
            else:
                f.write(b"[")
                sep = b"\n  "
                for doc in docs:
                    f.write(sep + encode(doc))
                    sep = b",\n  "
                f.write(b"\n]")
        finally:
            f.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.datagen", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--resumes", type=int, required=True, help="number of resumes (other collections scale)"
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", choices=("dump", "jsonl", "json"), default="dump")
    p.add_argument("--bad", action="store_true", help="mix in every bad-input case")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-gzip", action="store_true", help="dump: plain .data.json files")
    p.add_argument("--gzip", action="store_true", help="jsonl: gzip the files")
    p.add_argument("--envelope", action="store_true", help="dump: 3.8-style enveloped lines")
    p.add_argument(
        "--split-files", type=int, default=0, metavar="N", help="dump: at most N docs per file"
    )
    a = p.parse_args(argv)
    ds = generate(a.resumes, seed=a.seed, bad=a.bad)
    if a.format == "dump":
        write_dump(
            a.out,
            ds,
            gzip=not a.no_gzip,
            envelope=a.envelope,
            split_files=a.split_files,
            version_style="3.8" if a.envelope else "3.11",
        )
    else:
        write_jsonl(a.out, ds, gzip=a.gzip, fmt=a.format)
    print(" ".join(f"{c}={n}" for c, n in ds.counts.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
