"""Bench data shaped like the real ATSPro documents (see the shared spec source-data.md).

tests/datagen.py makes small documents (resumes of about 2.7 KB median, research reports of
1.7 KB) that exercise every shape and bad input; the tests depend on them. The real exports are
larger and their text is richer: resumes about 4 KB (typically 2-8 KB, a few far larger),
optimizations that carry a whole rewritten resume (markdown plus its structured form), research
reports of several hundred words (the spec's example has a word_count of 812), job postings with
a real description. Full-text cost grows with the number of words and distinct lexemes, so the
text here is drawn from a vocabulary of about a thousand words instead of fifty.

`RealShaped` is a tests.datagen.Dataset (same collections, counts, keys and references, same
shapes and field coverage of the older layouts) whose resumes, jobs and documents are
generated at those sizes. Sizes (JSON bytes, 20k documents, seed 1): see docs/performance.md.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from tests import datagen
from tests.datagen import _COMPANIES, _FIRST, _LAST, _SKILLS, _TITLES, _rng, key_for

# about a thousand words: everyday English of CVs and postings, tech terms, and derived forms
_BASE = """
ability able accelerate accept access accomplish account accurate achieve acquire act action
active adapt add address adjust administer adopt advance advise advocate affect agile align
allocate analyse analysis analyst analytical analyze annual anticipate apply approach approve
architect architecture area arrange assemble assess asset assign assist assure attend attract
audit author automate available balance bank base benchmark benefit best bid boost brand
brief bring broad budget build business buy calculate campaign candidate capability capacity
capture care career carry catalog centre certify chair challenge change channel chart check
client close cloud coach code collaborate collect combine command commercial communicate
community company compare compile complete complex compliance component compute concept
conduct configure consolidate construct consult consumer contact content contract contribute
control convert coordinate core corporate correct cost count create credit critical cross
culture current customer cut cycle daily data database deadline deal debug decide decision
define deliver demand demonstrate deploy design detail detect determine develop device devise
diagnose digital direct discover distribute diverse document domain draft drive drove earn
edit educate effective efficiency efficient eliminate employee enable encourage engage engine
engineer enhance ensure enterprise environment establish estimate evaluate event evolve exceed
execute executive expand expedite experience expert explain explore export extend facilitate
feature field finance financial focus forecast form formulate foster framework function fund
gain gather generate global goal govern grade grant grew grow growth guide handle head help
hire host identify implement import improve increase industry influence inform initiate
innovate input inspect install institute integrate interface interpret interview introduce
invent inventory invest investigate issue job join key knowledge label launch lead learn lease
legal level leverage license link listen locate logistics maintain manage manager manual map
market master maximize measure mediate meet mentor merge method metric migrate minimize model
modernize modify monitor motivate navigate negotiate network obtain office online open operate
operation optimize order organize outcome outline output oversee own package partner perform
pilot plan platform policy portfolio position predict prepare present prevent price principal
prioritize problem process procure produce product profile profit program progress project
promote propose protect prototype provide publish purchase quality quantify query raise rank
rate reach realign rebuild receive recommend reconcile record recruit redesign reduce refine
region regulate release remote render renew report represent request research resolve resource
respond restore restructure result retain revenue review revise risk roadmap route run sale
satisfy save scale schedule scope screen script secure segment select sell senior serve service
set share ship simplify skill software solve source spearhead specify sponsor staff standard
start steer store strategy streamline strengthen structure student study submit succeed supervise
supply support survey sustain system target task teach team technical technology test train
transfer transform translate trend troubleshoot unify update upgrade use user validate value
vendor verify vision volume web win work workflow write wrote yield
accounts administration agreements algorithms applications assessments audiences backlog
batch behaviour boards bonuses brands browsers campaigns certificates charts classes clients
clusters committees competitors components conferences containers contracts conversions
courses customers dashboards datasets deadlines departments deployments designers developers
dimensions documents editors emails employees endpoints engineers estimates events experiments
features files forecasts functions goals guidelines hardware incidents initiatives insights
integrations interns invoices issues journeys kernels languages leads libraries licences logs
markets meetings members messages metrics microservices milestones models modules networks
notebooks objectives offices operations orders outages owners pages partners patients payments
people pipelines plans playbooks policies portals practices presentations pricing priorities
procedures processes products programs projects proposals protocols queries queues releases
reports repositories requests requirements resources reviews risks roles routes sales samples
schedules schemas scripts sellers servers services sessions shipments sites skills specs
sprints stakeholders standards stores stories students suppliers surveys systems tables targets
teams templates tenants tests tickets tools trainings transactions trials units updates users
vendors versions videos volumes websites workloads workshops
accurately actively closely consistently continuously directly effectively efficiently
globally independently internally jointly manually newly primarily proactively quickly
regularly remotely securely significantly successfully strategically weekly monthly
agile annual automated commercial competitive complex critical cross-functional customer-facing
daily diverse dynamic end-to-end enterprise external fast-paced financial global hands-on
high-volume internal international key large-scale legacy multi-region new open-source
operational quarterly real-time regional regulatory reliable robust scalable secure senior
strategic technical timely
python java javascript typescript golang rust kotlin swift scala ruby php perl bash sql
postgresql mysql mongodb redis kafka rabbitmq elasticsearch spark hadoop airflow dbt snowflake
bigquery redshift tableau looker excel powerbi docker kubernetes terraform ansible jenkins
gitlab github circleci aws azure gcp lambda ec2 s3 linux nginx react angular vue nodejs django
flask fastapi spring graphql rest grpc pandas numpy pytorch tensorflow sklearn jira confluence
salesforce sap oracle hubspot figma sketch photoshop
"""
_WORDS = tuple(dict.fromkeys(_BASE.split()))
_NUMS = ("15%", "20%", "30%", "40%", "2x", "3x", "$1.2M", "$450K", "10,000", "99.9%", "200+", "50")


def _words(rng: random.Random, lo: int, hi: int) -> str:
    n = rng.randint(lo, hi)
    out = [rng.choice(_WORDS) for _ in range(n)]
    if n > 6 and rng.random() < 0.5:
        out.insert(rng.randrange(n), rng.choice(_NUMS))
    return " ".join(out)


def _sentence(rng: random.Random, lo: int = 8, hi: int = 22) -> str:
    return _words(rng, lo, hi).capitalize() + "."


def _paragraph(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(lo, hi)))


def _size_class(rng: random.Random) -> float:
    """A multiplier with a long right tail: most documents near 1, a few several times larger."""
    x = rng.lognormvariate(0.0, 0.45)
    if rng.random() < 0.01:
        x *= rng.uniform(4, 12)  # the rare very long CV
    return x


def _resume_data(rng: random.Random) -> dict:
    scale = _size_class(rng)
    name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    n_jobs = max(1, round(rng.randint(2, 5) * scale))
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
                "description": None if rng.random() < 0.5 else _sentence(rng, 12, 30),
                "responsibilities": [_sentence(rng) for _ in range(rng.randint(2, 6))],
                "skills": rng.sample(_SKILLS, rng.randint(2, 6)),
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
        "summary": None if rng.random() < 0.15 else _paragraph(rng, 2, 4),
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
        "skills": rng.sample(_SKILLS, rng.randint(5, 14)),
    }


def resume(seed: int, i: int) -> dict:
    """datagen's resume (its layouts and field coverage) with a real-sized resume_data."""
    doc = datagen._resume(seed, i)
    data = _resume_data(_rng(seed, "real-resumes", str(i)))
    for attr in ("resume_data", "parsed_data", "content"):
        if attr in doc:
            doc[attr] = data
            break
    else:  # the oldest layout: the sections at top level
        doc["contact_info"], doc["summary"] = data["contact_info"], data["summary"]
        doc["experience"], doc["education"] = data["work_experience"], data["education"]
        doc["skills"] = data["skills"]
    return doc


def job(seed: int, i: int) -> dict:
    doc = datagen._job(seed, i)
    rng = _rng(seed, "real-jobs", str(i))
    if doc["parsed_data"]["description"]:  # the parser found something
        doc["parsed_data"] = {
            "description": _paragraph(rng, 4, 12),
            "requirements": [_sentence(rng, 5, 14) for _ in range(rng.randint(3, 8))],
            "qualifications": [_sentence(rng, 5, 12) for _ in range(rng.randint(2, 5))],
            "benefits": rng.sample(("401k", "remote", "equity", "gym", "pension", "bonus"), 3),
            "skills": rng.sample(_SKILLS, rng.randint(3, 8)),
            "keywords": rng.sample(_WORDS, rng.randint(4, 10)),
        }
    return doc


def optimization(seed: int, i: int, key: str, n_resumes: int, n_jobs: int) -> dict:
    """An optimization carries a whole rewritten resume: markdown and its structured form."""
    doc = datagen._optimization(seed, i, key, n_resumes, n_jobs)
    rng = _rng(seed, "real-opt", str(i))
    data = _resume_data(rng)
    lines = ["# " + data["contact_info"]["full_name"], "", "## Summary", "", data["summary"] or ""]
    lines += ["", "## Experience"]
    for w in data["work_experience"]:
        lines += ["", f"### {w['position']}, {w['company']}", ""]
        lines += ["- " + r for r in w["responsibilities"]]
    lines += ["", "## Skills", "", ", ".join(data["skills"])]
    doc["content"] = "\n".join(lines)
    doc["optimized_data"] = {
        "summary": data["summary"],
        "work_experience": [
            {k: w[k] for k in ("company", "position", "responsibilities")}
            for w in data["work_experience"]
        ],
        "skills": data["skills"],
        "changes": [_sentence(rng, 6, 14) for _ in range(rng.randint(2, 6))],
        "keywords_added": rng.sample(_WORDS, rng.randint(3, 8)),
    }
    return doc


def research(seed: int, i: int, key: str, n_resumes: int, job_index: int) -> dict:
    """A company research report of several hundred words (markdown)."""
    doc = datagen._research(seed, i, key, n_resumes, job_index)
    rng = _rng(seed, "real-res", str(i))
    scale = _size_class(rng)
    sections = ("Overview", "Products", "Culture", "Recent news", "Interview tips", "Questions")
    parts = [f"# {doc['company']} company research"]
    for title in sections:
        parts.append(f"## {title}")
        parts.extend(_paragraph(rng, 3, 5) for _ in range(max(1, round(rng.randint(1, 2) * scale))))
    content = "\n\n".join(parts)
    doc["content"] = content
    doc["metadata"] = {**doc["metadata"], "word_count": len(content.split())}
    return doc


@dataclass(frozen=True)
class RealShaped(datagen.Dataset):
    """datagen's Dataset (same counts, keys, references) with real-sized documents."""

    def _generate(self, collection: str) -> Iterator[dict]:
        c = self._plan()
        s = self.seed
        if collection == "resumes":
            for i in range(c["resumes"]):
                yield resume(s, i)
        elif collection == "jobs":
            for i in range(c["jobs"]):
                yield job(s, i)
        elif collection == "documents":
            total = c["optimizations"] + c["research"] + c["other"]
            r = 0
            for d in range(total):
                key = key_for("documents", d)
                kind = self._doc_kind(d, c)
                if kind == "research":
                    yield research(s, d, key, c["resumes"], (r * 2 + 1) % max(c["jobs"], 1))
                    r += 1
                elif kind == "other":
                    yield datagen._other_document(s, d, key)
                else:
                    yield optimization(s, d, key, c["resumes"], c["jobs"])
        else:
            yield from super()._generate(collection)


def generate(n_resumes: int, *, seed: int = 0) -> RealShaped:
    return RealShaped(n_resumes, seed)


def sizes(ds) -> dict[str, dict[str, int]]:
    """JSON bytes per collection (documents per type): count, total bytes, p10, median, mean,
    p90, max."""
    from etl import jsonutil

    by: dict[str, list[int]] = {}
    for collection in ds:
        for d in ds[collection]:
            name = collection if collection != "documents" else f"documents:{d.get('type')}"
            by.setdefault(name, []).append(len(jsonutil.dumps(d)))
    out = {}
    for name, v in by.items():
        v.sort()
        out[name] = {
            "count": len(v),
            "bytes": sum(v),
            "p10": v[len(v) // 10],
            "median": v[len(v) // 2],
            "mean": sum(v) // len(v),
            "p90": v[9 * len(v) // 10],
            "max": v[-1],
        }
    return out
