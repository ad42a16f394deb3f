"""Review keywords without an LLM: Korean morphology (Kiwi) and embedding ranking, a drop-in for ``KeywordExtractor``.

Candidates are noun phrases from Kiwi's tokens (runs of NNG/NNP, and action nouns such as 주차 in
"주차할"), each joined to the evaluative predicate that describes it in the same clause when there is
one ("주차가 너무 불편해요" gives "주차 불편"). A clause with no noun but an aspect-bearing predicate
("너무 시끄러워서") yields the predicate alone. Aspect and sentiment come from small lexicons, with
negation (안/못, -지 않, 불-/비-/무-, and 없 after a noun) applied within the clause; a clause with no
noun of its own ("양이 적어서 | 아쉬웠어요") lends its words to the clause before it. Evidence is a
slice of the review through Kiwi's offsets, so it is always verbatim.

Ranking is KeyBERT-like: cosine between a review vector and each candidate noun phrase's vector,
relative to the best candidate of the review, mixed with a prior (aspect known, sentiment expressed,
frequency, position), then a greedy MMR pass that drops a candidate whose phrase embeds almost like
an already chosen one with the same sentiment. The review vector is the centroid of its phrases, or
with ``embed_reviews=True`` the embedding of its text. ``extract_many`` embeds a whole chunk of
reviews' new phrases (and texts) in one ``embed`` call; phrase vectors are cached per process.

Reason codes (``KeywordResult.error``, same contract as the LLM extractor; neither is transient):
``local_invalid_input`` (not a string, or text Kiwi cannot read) and ``local_invalid_output`` (the
analysis failed or its result failed ``validate_keywords``: a bug here, quarantined rather than written). A failing
``embed`` raises: that concerns every review alike.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import pairwise
from typing import Any

import kiwipiepy
import numpy as np
from kiwipiepy import Kiwi

from placerec.enrich.embeddings import EmbeddingClient, EmbeddingError
from placerec.enrich.grounding import ground
from placerec.enrich.llm import (
    ASPECTS,
    MAX_KEYWORDS,
    InvalidOutput,
    KeywordResult,
    LLMUsage,
    validate_keywords,
)
from placerec.settings import Settings, get_settings

log = logging.getLogger(__name__)

Embed = Callable[[list[str]], list[list[float]]]

DEFAULT_VERSION = "local-v1"
OTHER_ASPECT = "기타"
# Beyond this, the rest of a review is not analysed: evidence stays verbatim, cost stays bounded.
_MAX_TEXT_CHARS = 4000
# Only the start of a review is embedded: e5 reads 512 tokens at most and the server's time grows with length.
_EMBED_TEXT_CHARS = 512
_MAX_CANDIDATES = 48
_MAX_GROUP_TOKENS = 4
_MAX_TOPIC_CHARS = 30
_MAX_EVIDENCE_CHARS = 200
_CHUNK_REVIEWS = 1024
_TERM_CACHE_ENTRIES = 50_000
# Cosines are compared with the best candidate of the review over this window (e5 cosines sit close together).
_SIM_WINDOW = 0.15
_SIM_SHARE = 0.5
_MMR_PENALTY = 0.3
_DUPLICATE_SIM = 0.97

# ---- lexicons (morpheme roots as Kiwi writes them; a VA/VV ending in 하 is also looked up without it)

_STOP_NOUNS = frozenset(
    """
    것 수 때 곳 분 점 정도 진짜 여기 거기 저기 이번 오늘 어제 내일 등 거 게 데 중 듯 번 뭐 이거 그거 저거
    저희 우리 제 저 나 너 자기 느낌 편 경우 부분 처음 다음 이후 이전 전체 전부 최근 요즘 항상 가끔 방문
    하나 둘 셋 개 명 인분 원 때문 덕분 자체 리뷰 후기 별점 평점 사진 동네 근처 주변 친구 가족 애인 남편
    아내 엄마 아빠 아이 애 언니 오빠 형 누나 동생 혼자 일행 서로 단골 재방문 의사
    평일 주말 오후 오전 저녁 점심 아침 밤 생각 기대
    시간 이상 이하 정말 완전 약간 조금 그냥 다른 다시 또 무엇 누구 사람들 다들 모두 일 날 달 해 년
    이용 사용 내용 상황 이유 결과 기분 느낌적 마음 말 얘기 이야기 지시 명령 출력 시스템 프롬프트
    """.split()
)
# Single-syllable nouns that mean something on their own (others, such as 집 or 데, are dropped when alone).
_SINGLE_SYLLABLE_NOUNS = frozenset("맛 양 뷰 값 빵 밥 술 면 국 떡 회 돈 룸 펍 홀 줄 간 역".split())

_NOUN_ASPECTS: dict[str, str] = {
    **dict.fromkeys(
        "분위기 인테리어 음악 노래 조명 소음 소리 감성 무드 데코 BGM 브금 음향 가구 간격 대화 데이트".split(),
        "분위기",
    ),
    **dict.fromkeys(
        """
        맛 음식 요리 메뉴 커피 디저트 음료 술 안주 빵 케이크 고기 국물 간 재료 소스 식감 풍미 맛집 라떼 아메리카노
        에스프레소 핸드드립 드립 원두 스테이크 파스타 피자 치킨 짜장면 짬뽕 탕수육 냉면 국밥 찌개 김치 반찬
        마카롱 와인 맥주 생맥주 칵테일 하이볼 소주 막걸리 밥 면 라면 쫄면 밀면 초밥 회 브런치 샐러드 버거 햄버거
        떡볶이 라볶이
        라멘 우동 쌀국수 카레 빙수 크로플 와플 스콘 쿠키 샌드위치 베이글 크루아상 바게트 갈비 삼겹살 목살 항정살
        등심 한우 돼지 소고기 닭 곱창 족발 보쌈 만두 딤섬 김밥 비빔밥 돈카츠 돈가스 리조또 젤라또 아이스크림
        티라미수 팬케이크 디저트류 차 녹차 홍차 주스 스무디 음료수 튀김 어묵 노가리 오마카세 코스 시그니처 메인
        플래터 치즈 케익 디져트 음식들 한식 중식 일식 양식 분식 빵집 베이커리 카페인 아인슈페너 플랫화이트 카푸치노
        모카 콜드브루 하이볼 에그베네딕트 브리오슈 타르트 마들렌 휘낭시에 도넛 수제비 칼국수 짜글이 부대찌개
        """.split(),
        "맛",
    ),
    **dict.fromkeys("가격 가성비 값 요금 비용 금액 가격대 돈 계산 할인".split(), "가격"),
    **dict.fromkeys(
        "직원 사장 사장님 서비스 응대 알바 서버 점원 매니저 주인 태도 설명 안내 서빙 셰프 주문 서비스직".split(),
        "서비스",
    ),
    **dict.fromkeys("주차 주차장 발렛 주차비 주차공간 파킹 발레".split(), "주차"),
    **dict.fromkeys("뷰 전망 경치 야경 풍경 창밖 오션뷰 한강뷰 노을 일몰 바다 한강 뷰맛집 루프탑 테라스".split(), "뷰"),
    **dict.fromkeys("청결 위생 화장실 청소 먼지 벌레 바닥 냄새 위생상태".split(), "청결"),
    **dict.fromkeys("양 곱빼기 리필 사이즈 양도".split(), "양"),
    **dict.fromkeys("웨이팅 대기 줄 예약 대기줄 대기시간 회전 회전율 대기실".split(), "대기"),
}
# Nouns that only hint at an aspect: used when neither a stronger noun nor the predicate decides.
_WEAK_NOUN_ASPECTS: dict[str, str] = {
    **dict.fromkeys("공간 자리 좌석 매장 실내 내부 외관 창가 테이블 가게 카페".split(), "분위기"),
    **dict.fromkeys("주방".split(), "청결"),
}
# Compound endings that give the aspect away ("된장찌개", "발렛파킹", "오션뷰"), tried on each noun and on the run.
_FOOD_SUFFIXES = tuple(
    "찌개 탕 국밥 볶음 무침 구이 라떼 커피 케이크 빵 주스 버거 파스타 피자 초밥 밥 전골 국수 맛 에이드 맥주 와인 "
    "고기 등심 갈비 냉면 짜장면 비빔면".split()
)
_ASPECT_SUFFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("주차", ("주차", "주차장", "파킹")),
    ("뷰", ("뷰", "전망", "야경")),
    ("대기", ("웨이팅", "대기")),
    ("맛", _FOOD_SUFFIXES),
)
_PREDICATE_ASPECTS: dict[str, str] = {
    **dict.fromkeys(
        "조용 시끄럽 아늑 한적 북적 어수선 감성적 감각적 세련 쾌적 편안 아기자기 은은 답답 낡 고급 예쁘 이쁘".split(),
        "분위기",
    ),
    **dict.fromkeys(
        "맛있 맛없 짜 싱겁 달 달달 고소 신선 담백 느끼 비리 텁텁 바삭 촉촉 쫄깃 질기 눅눅 매콤 맵 밍밍 식 "
        "감칠맛 퍽퍽 부드럽 진하 깊 맛나 꿀맛".split(),
        "맛",
    ),
    **dict.fromkeys("비싸 저렴 싸 합리 합리적 착하 부담 사악 과하 아깝 바가지".split(), "가격"),
    **dict.fromkeys("친절 불친절 상냥 친근 퉁명 무례 세심 배려 무성의 성의 챙기 느리".split(), "서비스"),
    **dict.fromkeys("깨끗 깔끔 청결 더럽 지저분 끈적 끈적거리 비위생 위생적 찝찝 정돈 미끄럽 불결".split(), "청결"),
    **dict.fromkeys("푸짐 넉넉 배부르 배불리 감질 감질나".split(), "양"),
    **dict.fromkeys("한산 붐비 혼잡 기다리".split(), "대기"),
    **dict.fromkeys("협소".split(), "주차"),
}
_POLARITY: dict[str, float] = {
    **dict.fromkeys(
        """
        좋 맛있 친절 깨끗 깔끔 청결 훌륭 최고 추천 강추 재밌 재미있 재미 만족 만족스럽 예쁘 이쁘 멋지 멋있 아늑
        편하 편리 편안 푸짐 넉넉 저렴 합리 합리적 착하 신선 괜찮 감사 행복 즐겁 사랑 짱 대박 인정 완벽 끝내주
        뛰어나 고소 조용 한산 적당 알차 든든 감동 세련 쾌적 정갈 풍부 상냥 친근 세심 배려 환상적 감각적 은은 맛나
        꿀맛 인생 성의 정성 여유 여유롭 충분 쉽 가깝 빠르 담백 촉촉 바삭 쫄깃 부드럽 감성적 아기자기 특별 최상
        """.split(),
        1.0,
    ),
    **dict.fromkeys(
        """
        별로 불친절 비싸 불편 최악 지루 실망 아쉽 나쁘 싫 더럽 지저분 시끄럽 좁 협소 맛없 짜 싱겁 느리 늦 불만
        부담 걱정 끈적 끈적거리 불쾌 재미없 노잼 어둡 부족 감질 감질나 엉망 실수 귀찮 힘들 어렵 복잡 혼잡 붐비
        퉁명 무례 짜증 심하 텁텁 질기 느끼 비리 눅눅 퍽퍽 바가지 아깝 후회 과하 사악 밍밍 어수선 답답 낡 찝찝
        평범 그저 문제 불결 멀 미끄럽 무성의 상하 헤매 식
        """.split(),
        -1.0,
    ),
    **dict.fromkeys("제대로 잘 자세히 알아서".split(), 0.5),
}
# Words whose sentiment depends on the aspect ("양이 많아요" is good news, "사람이 많아요" at a queue is not).
_ASPECT_POLARITY: dict[str, dict[str, float]] = {
    "양": {"많": 1.0, "적": -1.0, "크": 1.0, "작": -1.0, "충분": 1.0, "배부르": 1.0, "배불리": 1.0},
    "대기": {
        "걸리": -0.5,
        "넘": -0.5,
        "길": -1.0,
        "짧": 1.0,
        "많": -1.0,
        "오래": -1.0,
        "한참": -1.0,
        "금방": 1.0,
        "바로": 1.0,
        "빠르": 1.0,
        "되": 0.5,
        "기다리": -0.5,
    },
    "가격": {"싸": 1.0, "높": -1.0, "낮": 1.0, "세": -1.0, "적당": 1.0},
    "주차": {"넓": 1.0, "넉넉": 1.0, "가능": 1.0, "되": 0.5, "지원": 1.0, "편하": 1.0, "있": 0.5},
    "맛": {"진하": 1.0, "깊": 1.0, "달": 0.5, "맵": 0.0},
    "분위기": {"크": -0.5, "넓": 1.0, "밝": 0.5},
    "뷰": {"넓": 1.0, "트이": 1.0, "없": -1.0},
    "서비스": {"오래": -1.0, "한참": -1.0},
}
# Nouns whose absence is good news: "웨이팅 없이", "불만 없어요".
_NUISANCE_NOUNS = frozenset("웨이팅 대기 줄 냄새 소음 벌레 불만 문제 흠 단점 실패 먼지 바가지 대기줄 대기시간".split())
_EXISTENCE = "없"
_NEGATING_ADVERBS = frozenset({"안", "못"})
_NEGATING_AUXILIARIES = frozenset({"않", "못하"})
_NEGATING_PREFIXES = frozenset({"불", "비", "무", "미", "몰"})
# Adverbs that carry sentiment but make a poor term ("마카롱 제대로" is not a phrase anyone searches).
_ATTACHABLE_ADVERBS = frozenset({"별로", "없이"})
# Nouns Kiwi tags NNG that work as adverbs of degree ("한참 기다렸어요").
_ADVERB_NOUNS = frozenset({"한참", "인생"})

_NOUN_TAGS = frozenset({"NNG", "NNP"})
_PREDICATE_TAGS = frozenset({"VA", "VV"})
_SENTENCE_END_TAGS = frozenset({"SF", "EF", "SW", "SE"})
_CLAUSE_END_TAGS = frozenset({"SP", "SO", "SS", "SSO", "SSC"})
_WHITESPACE_RE = re.compile(r"\s+")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")


def _all_evaluative() -> frozenset[str]:
    words = set(_POLARITY) | set(_PREDICATE_ASPECTS) | _ATTACHABLE_ADVERBS
    for table in _ASPECT_POLARITY.values():
        words |= set(table)
    return frozenset(words)


_EVALUATIVE = _all_evaluative()

# ---- one Kiwi per process: loading its model takes about a second

_KIWI: Kiwi | None = None
_KIWI_LOCK = threading.Lock()


def _kiwi() -> Kiwi:
    """The process's Kiwi; call with ``_KIWI_LOCK`` held (kiwipiepy does not promise concurrent use)."""
    global _KIWI
    if _KIWI is None:
        _KIWI = Kiwi()
    return _KIWI


def tokenize(text: str) -> list[Any]:
    """Kiwi's tokens of one text (thread-safe), e.g. for matching terms in the gold-set evaluation."""
    with _KIWI_LOCK:
        return list(_kiwi().tokenize(text))


def _tokenize_all(texts: list[str]) -> list[list[Any] | None]:
    """Kiwi tokens per text, None for a text Kiwi refuses (the rest of the batch still gets its tokens)."""
    with _KIWI_LOCK:
        kiwi = _kiwi()
        try:
            return [list(tokens) for tokens in kiwi.tokenize(texts)]
        except Exception:
            # One text Kiwi cannot read must not cost the batch: read them one by one.
            log.info("Kiwi failed on a batch of %d texts; tokenizing them one by one", len(texts))
        out: list[list[Any] | None] = []
        for text in texts:
            try:
                out.append(list(kiwi.tokenize(text)))
            except Exception as exc:
                log.warning("Kiwi cannot read a review (%s)", type(exc).__name__)
                out.append(None)
        return out


@lru_cache(maxsize=4096)
def _joined(morphs: tuple[tuple[str, str], ...]) -> str:
    with _KIWI_LOCK:
        return str(_kiwi().join(list(morphs)))


# ---- analysis of one review


@dataclass(frozen=True)
class _Tok:
    form: str
    tag: str
    start: int
    end: int
    sent: int


@dataclass
class _Predicate:
    index: int
    start: int
    end: int
    root: str
    kind: str
    """VA, VV, XR (a root before 하/스럽), NNG (an evaluative noun), MAG, or 없 (existence)."""
    tag: str = ""
    """Kiwi's own tag (VA-I …), which ``Kiwi.join`` needs to conjugate irregular roots."""
    negated: bool = False
    base: float | None = None
    """Fixed polarity (a 불-/비-/무- prefix, a noun before 없); None: look the root up per aspect."""
    consumed: bool = False


@dataclass
class _Clause:
    tokens: list[int] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)
    predicates: list[_Predicate] = field(default_factory=list)
    carried: list[_Predicate] = field(default_factory=list)
    sentence_end: bool = False


@dataclass
class _Candidate:
    topic: str
    term: str
    aspect: str
    sentiment: str
    evidence: str
    position: int
    count: int = 1
    score: float = 0.0


def _base_tag(tag: str) -> str:
    return tag.split("-", 1)[0]


def _root_of(form: str, tag: str) -> str:
    """The lexicon key: Kiwi reads some 하다 adjectives whole (한산하/VA), the lexicon lists their root (한산)."""
    if _base_tag(tag) in _PREDICATE_TAGS and len(form) > 1 and form.endswith("하") and form not in _EVALUATIVE:
        return form[:-1]
    return form


def _polarity(pred: _Predicate, aspect: str, head: str) -> float:
    if pred.consumed:
        return 0.0
    if pred.base is not None:
        value = pred.base
    elif pred.kind == _EXISTENCE:
        value = _ASPECT_POLARITY.get(aspect, {}).get(_EXISTENCE, 1.0 if head in _NUISANCE_NOUNS else -1.0)
    else:
        table = _ASPECT_POLARITY.get(aspect, {})
        value = table[pred.root] if pred.root in table else _POLARITY.get(pred.root, 0.0)
    return -value if pred.negated else value


def _attachable(pred: _Predicate, aspect: str, head: str) -> bool:
    if pred.consumed:
        return False
    if pred.kind == "MAG" and pred.root not in _ATTACHABLE_ADVERBS:
        return False
    return pred.kind == _EXISTENCE or pred.root in _PREDICATE_ASPECTS or _polarity(pred, aspect, head) != 0.0


def _predicate_phrase(pred: _Predicate) -> str:
    """A dictionary-like form: 좋음, 비싸지 않음, 불편, 친절하지 않음, 없음, 최고."""
    if pred.kind == _EXISTENCE:
        return "없음" if not pred.negated else "없지 않음"
    if pred.kind in ("XR", "NNG", "MAG"):
        if not pred.negated or pred.base is not None:
            return pred.root
        return _joined(((pred.root, "XR"), ("하", "XSA"), ("지", "EC"), ("않", "VX"), ("음", "ETN")))
    tag = pred.tag or pred.kind
    if pred.negated:
        return _joined(((pred.root, tag), ("지", "EC"), ("않", "VX"), ("음", "ETN")))
    return _joined(((pred.root, tag), ("음", "ETN")))


def _noun_aspect(forms: Sequence[str], surface: str) -> str | None:
    # The head of a Korean compound is its last noun: "커피 가격" is about the price. The surface catches
    # what Kiwi splits or misreads ("발렛 파킹" as 발/렛/파/킹, "목살을" as 목사 + ㄹ).
    for form in (*reversed(forms), "".join(forms), surface.replace(" ", "")):
        if form in _NOUN_ASPECTS:
            return _NOUN_ASPECTS[form]
        for aspect, suffixes in _ASPECT_SUFFIXES:
            if len(form) > 1 and form.endswith(suffixes):
                return aspect
    return None


def _aspect_of(forms: Sequence[str], surface: str, predicate: _Predicate | None) -> str:
    """Aspect of a noun phrase: a telling noun, else the predicate, else a vague noun (자리, 매장), else 기타."""
    strong = _noun_aspect(forms, surface)
    told = _PREDICATE_ASPECTS.get(predicate.root) if predicate is not None else None
    # A price word outranks a dish: "메뉴가 저렴해요" is about the price.
    if strong is not None and not (told == "가격" and strong == "맛"):
        return strong
    if told is not None:
        return told
    for form in reversed(forms):
        if form in _WEAK_NOUN_ASPECTS:
            return _WEAK_NOUN_ASPECTS[form]
    return OTHER_ASPECT


class _Review:
    """Candidates of one review from its Kiwi tokens; ``text`` is NFC, ``plain`` the same without surrogates."""

    def __init__(self, text: str, plain: str, raw_tokens: Iterable[Any]) -> None:
        self.text, self.plain = text, plain
        self.toks = [
            _Tok(t.form, t.tag, t.start, t.start + t.len, t.sent_position)
            for t in raw_tokens
            if t.len > 0 and t.start + t.len <= len(text)
        ]

    def _attached(self, i: int) -> bool:
        """Token ``i + 1`` continues token ``i`` without a space (Kiwi may overlap them: 해 = 하 + 어)."""
        return i + 1 < len(self.toks) and self.toks[i + 1].start <= self.toks[i].end

    def _word_end(self, i: int) -> int:
        """Where the word holding token ``i`` ends, trailing punctuation and emoticons excluded."""
        end = self.toks[i].end
        k = i + 1
        while k < len(self.toks) and self.toks[k].start <= end and not self.toks[k].tag.startswith(("S", "W")):
            end = max(end, self.toks[k].end)
            k += 1
        return end

    def _word_last(self, i: int) -> int:
        k = i
        while self._attached(k) and not self.toks[k + 1].tag.startswith(("S", "W")):
            k += 1
        return k

    def _kind(self, i: int) -> str:
        """``noun`` (a topic), ``pred`` (evaluative), ``prefix-pred``, ``stop`` or ``other`` for token ``i``."""
        tok = self.toks[i]
        tag = _base_tag(tok.tag)
        nxt = _base_tag(self.toks[i + 1].tag) if self._attached(i) else ""
        if tag == "XR":
            return "pred"
        if tag in _NOUN_TAGS:
            suffixed = nxt == "XSN" and self.toks[i + 1].form == "적" and tok.form + "적" in _EVALUATIVE
            evaluative = suffixed or nxt == "XSA" or (tok.form in _EVALUATIVE and tok.form not in _NOUN_ASPECTS)
            negative_prefix = (
                i > 0 and self.toks[i - 1].tag == "XPN" and self.toks[i - 1].form in _NEGATING_PREFIXES
                and self.toks[i - 1].end == tok.start
            )  # fmt: skip
            if negative_prefix and (evaluative or tok.form in _NOUN_ASPECTS):
                return "prefix-pred"
            if evaluative:
                return "pred"
            if tok.form in _STOP_NOUNS:
                return "stop"
            # An action noun before 하다 names a topic only when it is one we know (주차할, 예약하고), not 정리돼.
            if nxt == "XSV" and _noun_aspect([tok.form], tok.form) is None:
                return "other"
            return "noun"
        if tag == "SL" and nxt and (nxt.startswith("J") or nxt in ("VCP", "XSN")):
            return "noun"
        if tag in _PREDICATE_TAGS:
            return "other" if tok.form == "하" else "pred"
        if tag in ("MAG", "IC") and tok.form in _EVALUATIVE:
            return "pred"
        return "other"

    def _negated_before(self, i: int) -> tuple[bool, int]:
        k = i - 1
        if k >= 0 and self.toks[k].tag == "XPN":
            k -= 1
        if k >= 0 and self.toks[k].tag == "MAG" and self.toks[k].form in _NEGATING_ADVERBS:
            return True, self.toks[k].start
        return False, self.toks[i].start

    def _negated_after(self, i: int) -> tuple[bool, int]:
        """ "-지 않" / "-지 못하" after the predicate word: negated, and where the auxiliary's word ends."""
        last = self._word_last(i)
        for k in range(i + 1, last + 1):
            tok = self.toks[k]
            if tok.tag == "EC" and tok.form.startswith("지") and k + 1 < len(self.toks):
                aux = self.toks[k + 1]
                if aux.form in _NEGATING_AUXILIARIES and _base_tag(aux.tag) in ("VX", "VV", "VA"):
                    return True, self._word_end(k + 1)
        return False, self._word_end(i)

    def _predicate(self, i: int, kind: str) -> _Predicate:
        tok = self.toks[i]
        tag = _base_tag(tok.tag)
        if tok.form in (_EXISTENCE, "없이"):
            pkind = _EXISTENCE
        elif tok.form in _ADVERB_NOUNS or tag == "IC":
            pkind = "MAG"
        elif tag in ("NNG", "NNP"):
            pkind = "XR" if self._attached(i) and _base_tag(self.toks[i + 1].tag) in ("XSA", "XSV") else "NNG"
        else:
            pkind = tag
        root = _root_of(tok.form, tok.tag)
        if root != tok.form:
            pkind = "XR"
        elif self._attached(i) and self.toks[i + 1].tag == "XSN" and self.toks[i + 1].form == "적":
            root = tok.form + "적"  # 환상적, 감각적: Kiwi splits off the suffix the lexicon keeps
        before, start = self._negated_before(i)
        after, end = self._negated_after(i)
        pred = _Predicate(i, start, end, root, pkind, tok.tag, negated=before != after)
        if kind == "prefix-pred":
            # 불친절, 비위생, 무성의: the prefix turns a good word bad, and a neutral one bad too.
            value = _POLARITY.get(pred.root, 0.0)
            pred.base = -value if value else -1.0
            pred.start = min(start, self.toks[i - 1].start)
            pred.kind = "XR"
            pred.root = self.toks[i - 1].form + pred.root
        return pred

    def _clauses(self) -> list[_Clause]:
        clauses: list[_Clause] = [_Clause()]
        toks = self.toks
        for i, tok in enumerate(toks):
            current = clauses[-1]
            if current.tokens:
                prev = toks[current.tokens[-1]]
                if tok.sent != prev.sent or "\n" in self.text[prev.end : tok.start]:
                    current.sentence_end = True
                    current = _Clause()
                    clauses.append(current)
            current.tokens.append(i)
            tag = _base_tag(tok.tag)
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            end_sentence = tag in _SENTENCE_END_TAGS or tok.tag.startswith("W_")
            end_clause = tag in _CLAUSE_END_TAGS
            if tag == "EC" and not (tok.form in ("게", "지") or (nxt is not None and _base_tag(nxt.tag) == "VX")):
                end_clause = True
            # "-는데" reaches Kiwi as ETM + 데 (NNB): the same clause break as the connective ending.
            if tag == "NNB" and tok.form == "데" and i > 0 and toks[i - 1].tag == "ETM":
                end_clause = True
            if end_sentence or end_clause:
                current.sentence_end = end_sentence
                clauses.append(_Clause())
        return [c for c in clauses if c.tokens]

    def _fill(self, clause: _Clause) -> None:
        kinds = [self._kind(i) for i in clause.tokens]
        group: list[int] = []
        for i, kind in zip(clause.tokens, kinds, strict=True):
            if kind == "noun" and (not group or group[-1] == i - 1):
                group.append(i)
                continue
            if group:
                clause.groups.append(group)
            group = [i] if kind == "noun" else []
            if kind in ("pred", "prefix-pred"):
                clause.predicates.append(self._predicate(i, kind))
        if group:
            clause.groups.append(group)
        clause.groups = [self._trim(g) for g in clause.groups if self._keep(g)]
        # A noun right before 없 is not missing a quality, it is absent: "불만 없어요", "문제 없이".
        for a, b in pairwise(clause.predicates):
            between = range(a.index + 1, b.index)
            if (
                b.kind == _EXISTENCE and a.kind == "NNG" and a.root in _POLARITY
                and all(self.toks[k].tag.startswith("J") for k in between)
            ):  # fmt: skip
                a.negated, a.end, b.consumed = not a.negated, b.end, True

    def _keep(self, group: list[int]) -> bool:
        if len(group) > 1:
            return True
        form = self.toks[group[0]].form
        return len(form) > 1 or form in _SINGLE_SYLLABLE_NOUNS

    @staticmethod
    def _trim(group: list[int]) -> list[int]:
        return group[-_MAX_GROUP_TOKENS:]

    def candidates(self) -> list[_Candidate]:
        clauses = self._clauses()
        for clause in clauses:
            self._fill(clause)
        # A clause without a noun of its own ("…적어서 | 아쉬웠어요") speaks about the clause before it.
        owner: _Clause | None = None
        for clause in clauses:
            if clause.groups:
                owner = clause
            elif owner is not None:
                owner.carried.extend(clause.predicates)
                clause.predicates = []
            elif any(p.root in _PREDICATE_ASPECTS for p in clause.predicates):
                owner = clause
            if clause.sentence_end:
                owner = None
        out: list[_Candidate] = []
        for clause in clauses:
            if clause.groups:
                out.extend(self._from_group(clause, g) for g in clause.groups)
            else:
                out.extend(self._from_predicates(clause))
        return out

    def _topic(self, group: list[int]) -> str:
        return _clean(self.plain[self.toks[group[0]].start : self.toks[group[-1]].end])

    def _sentiment(self, preds: Iterable[_Predicate], aspect: str, head: str) -> str:
        total = sum(_polarity(p, aspect, head) for p in preds)
        return "positive" if total > 0 else "negative" if total < 0 else "neutral"

    def _from_group(self, clause: _Clause, group: list[int]) -> _Candidate:
        forms = [self.toks[i].form for i in group]
        head = forms[-1]
        start, end = self.toks[group[0]].start, self.toks[group[-1]].end
        topic = self._topic(group)
        guess = _noun_aspect(forms, topic) or OTHER_ASPECT
        pred = self._attach(clause, group, guess, head)
        aspect = _aspect_of(forms, topic, pred)
        if pred is None and aspect != guess:
            pred = self._attach(clause, group, aspect, head)
        preds = clause.predicates + clause.carried
        sentiment = self._sentiment(preds, aspect, head)
        if pred is not None:
            term = f"{topic} {_predicate_phrase(pred)}"
            span = (start, pred.end) if pred.index > group[-1] else (pred.start, end)
        else:
            # No predicate of its own: the evidence reaches the words that carry the sentiment.
            term = topic
            polar = [p for p in preds if _polarity(p, aspect, head) != 0.0]
            span = (min([start, *(p.start for p in polar)]), max([self._word_end(group[-1]), *(p.end for p in polar)]))
        if span[1] - span[0] > _MAX_EVIDENCE_CHARS:
            span = (start, self._word_end(group[-1]))
        return _Candidate(topic, term, aspect, sentiment, self.text[span[0] : span[1]], start)

    def _attach(self, clause: _Clause, group: list[int], aspect: str, head: str) -> _Predicate | None:
        """The predicate describing a noun: the first after it in its clause, else an adnominal one before it.

        A predicate past another noun describes that noun ("루프탑에서 보는 야경이 최고예요" praises the
        night view), unless the two nouns are coordinated ("맛과 양이 좋아요").
        """
        coordinated = group[-1] + 1 < len(self.toks) and self.toks[group[-1] + 1].tag == "JC"
        others = [g[0] for g in clause.groups if g[0] > group[-1]]
        for pred in [p for p in clause.predicates if p.index > group[-1]] + clause.carried:
            if not coordinated and any(first < pred.index for first in others):
                break
            if _attachable(pred, aspect, head):
                return pred
        earlier = [g[-1] for g in clause.groups if g[-1] < group[0]]
        for pred in reversed([p for p in clause.predicates if p.index < group[0]]):
            if any(last > pred.index for last in earlier):
                break
            if self._adnominal(pred.index) and _attachable(pred, aspect, head):
                return pred
        return None

    def _adnominal(self, i: int) -> bool:
        """The word of token ``i`` ends in an adnominal ending (좋은, 친절한): it describes the next noun."""
        return any(self.toks[k].tag == "ETM" for k in range(i + 1, self._word_last(i) + 1))

    def _from_predicates(self, clause: _Clause) -> list[_Candidate]:
        out = []
        seen: set[str] = set()
        for pred in clause.predicates:
            aspect = _PREDICATE_ASPECTS.get(pred.root)
            if aspect is None or aspect in seen or pred.consumed:
                continue
            seen.add(aspect)
            term = _predicate_phrase(pred)
            sentiment = self._sentiment(clause.predicates + clause.carried, aspect, "")
            out.append(_Candidate(term, term, aspect, sentiment, self.text[pred.start : pred.end], pred.start))
        return out


def _clean(text: str) -> str:
    """A term as people write it: one space between words, no invisible characters (zero-width space …)."""
    visible = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return _WHITESPACE_RE.sub(" ", visible).strip()


def _prepare(text: str) -> tuple[str, str]:
    """The NFC text evidence is cut from, and the same text with lone surrogates replaced (one for one)."""
    nfc = unicodedata.normalize("NFC", text)[:_MAX_TEXT_CHARS]
    return nfc, _SURROGATE_RE.sub("\ufffd", nfc)


def _merge(candidates: list[_Candidate]) -> list[_Candidate]:
    """One candidate per term (the first), counting repeats of its topic; at most ``_MAX_CANDIDATES``."""
    counts: dict[str, int] = {}
    for c in candidates:
        key = c.topic.replace(" ", "")
        counts[key] = counts.get(key, 0) + 1
    merged: dict[str, _Candidate] = {}
    for c in candidates:
        # A "noun" of dozens of characters is Kiwi reading noise ("맛맛맛…"), not a keyword.
        if not c.term.strip() or not c.evidence.strip() or len(c.topic) > _MAX_TOPIC_CHARS:
            continue
        if c.term not in merged:
            merged[c.term] = replace(c, count=counts[c.topic.replace(" ", "")])
    return list(merged.values())[:_MAX_CANDIDATES]


# ---- vectors


class _VectorCache:
    """A bounded, thread-safe LRU map from phrase to unit vector."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def get_many(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        found = {}
        with self._lock:
            for key in keys:
                vector = self._data.get(key)
                if vector is not None:
                    self._data.move_to_end(key)
                    found[key] = vector
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        with self._lock:
            for key, vector in items.items():
                self._data[key] = vector
                self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)


_SHARED_CACHES: dict[str, _VectorCache] = {}
_SHARED_CACHES_LOCK = threading.Lock()


def _shared_cache(key: str) -> _VectorCache:
    with _SHARED_CACHES_LOCK:
        if key not in _SHARED_CACHES:
            _SHARED_CACHES[key] = _VectorCache(_TERM_CACHE_ENTRIES)
        return _SHARED_CACHES[key]


def _unit_rows(vectors: list[list[float]], expected: int) -> np.ndarray:
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(f"embed returned vectors of uneven length or type: {exc}") from None
    if matrix.ndim != 2 or matrix.shape[0] != expected or matrix.shape[1] == 0:
        raise EmbeddingError(f"embed returned shape {matrix.shape} for {expected} texts")
    if not np.isfinite(matrix).all():
        raise EmbeddingError("embed returned a non-finite value")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _centroid(vectors: list[np.ndarray], weights: list[int]) -> np.ndarray:
    """The unit mean of ``vectors`` weighted by ``weights``: what a review's phrases have in common."""
    mean = np.average(np.stack(vectors), axis=0, weights=np.asarray(weights, dtype=np.float32))
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else mean


def _embed_text(text: str) -> str:
    return _WHITESPACE_RE.sub(" ", text[:_EMBED_TEXT_CHARS]).strip()


# ---- the extractor


class LocalKeywordExtractor:
    """Review keywords with no API key: Kiwi morphology plus embedding ranking; thread-safe.

    ``embed`` maps texts to vectors (one call per chunk of reviews); by default an ``EmbeddingClient``
    from ``settings`` embeds them as passages, and phrase vectors are then cached per process and
    endpoint. An ``embed`` passed in gets a cache of its own.

    A review's own vector is, by default, the centroid of its phrases' vectors (weighted by how often
    each phrase occurs): phrases repeat across reviews and come from the cache, so a warm extractor
    embeds almost nothing. ``embed_reviews=True`` embeds each review's text instead (KeyBERT proper);
    that sends one review-length text per review, which on the local CPU server is most of the run time.
    """

    extractor = "local"

    def __init__(
        self,
        *,
        embed: Embed | None = None,
        settings: Settings | None = None,
        max_keywords: int = MAX_KEYWORDS,
        version: str = DEFAULT_VERSION,
        embed_reviews: bool = False,
    ) -> None:
        if not 1 <= max_keywords <= MAX_KEYWORDS:
            raise ValueError(f"max_keywords must be within 1..{MAX_KEYWORDS}, got {max_keywords}")
        self._settings = settings or get_settings()
        self.max_keywords = max_keywords
        self.prompt_version = version
        self.embed_reviews = embed_reviews
        self._client: EmbeddingClient | None = None
        self._embed = embed
        s = self._settings
        # The identity a run records and caches under: the same whether ``embed`` is given or not, so an
        # instance made only to describe the extractor names the same model as the workers' instances.
        self.model = f"kiwi-{kiwipiepy.__version__}+{s.embeddings_model}"
        if embed is None:
            self._cache = _shared_cache(f"{s.embeddings_base_url or s.embeddings_url}|{s.embeddings_model}")
        else:
            self._cache = _VectorCache(_TERM_CACHE_ENTRIES)
        self._lock = threading.Lock()
        self._usage = LLMUsage()

    def __repr__(self) -> str:
        return f"LocalKeywordExtractor(model={self.model!r}, version={self.prompt_version!r})"

    def __enter__(self) -> LocalKeywordExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the embedding client if this extractor made one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    @property
    def usage(self) -> LLMUsage:
        """A snapshot of the totals so far; ``calls`` counts ``embed`` calls, tokens stay 0."""
        with self._lock:
            return replace(self._usage)

    def extract(self, text: str) -> KeywordResult:
        """Keywords of one review; never raises for a per-review problem (see ``KeywordResult.error``)."""
        return self.extract_many([text])[0]

    def extract_many(self, texts: Sequence[str]) -> list[KeywordResult]:
        """Keywords of many reviews, results in input order; one ``embed`` call per chunk of reviews."""
        started = time.monotonic()
        try:
            results: list[KeywordResult] = []
            for i in range(0, len(texts), _CHUNK_REVIEWS):
                results.extend(self._chunk(texts[i : i + _CHUNK_REVIEWS]))
            return [self._grounded(result, text) for result, text in zip(results, texts, strict=True)]
        finally:
            self._count(reviews=len(texts), seconds=time.monotonic() - started)

    def _count(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self._usage, name, getattr(self._usage, name) + amount)

    def _grounded(self, result: KeywordResult, text: str) -> KeywordResult:
        """``result`` without the keywords the review does not ground (words of a sentence addressing a model)."""
        if not result.keywords:
            return result
        kept, dropped = ground(result.keywords, text)
        if not dropped:
            return result
        self._count(ungrounded=len(dropped))
        return replace(result, keywords=kept)

    def _call_embed(self, texts: list[str]) -> list[list[float]]:
        self._count(calls=1)
        if self._embed is not None:
            return self._embed(texts)
        with self._lock:
            if self._client is None:
                self._client = EmbeddingClient(settings=self._settings)
            client = self._client
        return client.embed(texts, "passage")

    def _chunk(self, texts: Sequence[str]) -> list[KeywordResult]:
        errors: dict[int, str] = {}
        prepared: list[tuple[str, str]] = []
        for i, text in enumerate(texts):
            if isinstance(text, str):
                prepared.append(_prepare(text))
            else:
                errors[i] = f"local_invalid_input: expected a string, got {type(text).__name__}"
                prepared.append(("", ""))
        tokens = _tokenize_all([plain for _, plain in prepared])
        per_review: list[list[_Candidate]] = []
        for i, ((nfc, plain), toks) in enumerate(zip(prepared, tokens, strict=True)):
            if toks is None:
                errors.setdefault(i, "local_invalid_input: the morphological analyser cannot read this text")
                per_review.append([])
                continue
            try:
                per_review.append(_merge(_Review(nfc, plain, toks).candidates()))
            except Exception as exc:
                # A token pattern the analysis does not expect is a bug here: quarantine the review, keep the batch.
                log.exception("local keyword analysis failed on one review")
                errors[i] = f"local_invalid_output: analysis failed ({type(exc).__name__})"
                per_review.append([])
        self._rank(prepared, per_review)
        results = []
        for i, candidates in enumerate(per_review):
            if i in errors:
                results.append(self._rejected(errors[i]))
            else:
                results.append(self._result(candidates, prepared[i][0]))
        return results

    def _rank(self, prepared: list[tuple[str, str]], per_review: list[list[_Candidate]]) -> None:
        """Score and choose candidates in place: only reviews with two or more candidates need vectors."""
        ranked = [i for i, c in enumerate(per_review) if len(c) > 1]
        review_texts = list(dict.fromkeys(_embed_text(prepared[i][1]) for i in ranked)) if self.embed_reviews else []
        topics = list(dict.fromkeys(c.topic for i in ranked for c in per_review[i]))
        vectors = self._cache.get_many(topics)
        missing = [t for t in topics if t not in vectors]
        wanted = review_texts + missing
        reviews: dict[str, np.ndarray] = {}
        if wanted:
            matrix = _unit_rows(self._call_embed(wanted), len(wanted))
            reviews = dict(zip(review_texts, matrix[: len(review_texts)], strict=True))
            fresh = dict(zip(missing, matrix[len(review_texts) :], strict=True))
            self._cache.put_many(fresh)
            vectors.update(fresh)
        for i, candidates in enumerate(per_review):
            length = max(1, len(prepared[i][0]))
            for c in candidates:
                c.score = _prior(c, length)
            if i in ranked:
                if self.embed_reviews:
                    review = reviews[_embed_text(prepared[i][1])]
                else:
                    review = _centroid([vectors[c.topic] for c in candidates], [c.count for c in candidates])
                per_review[i] = self._choose(candidates, review, vectors)

    def _choose(
        self, candidates: list[_Candidate], review: np.ndarray, vectors: dict[str, np.ndarray]
    ) -> list[_Candidate]:
        topic_vectors = np.stack([vectors[c.topic] for c in candidates])
        sims = topic_vectors @ review
        best = float(sims.max())
        for c, sim in zip(candidates, sims, strict=True):
            relative = min(1.0, max(0.0, 1.0 - (best - float(sim)) / _SIM_WINDOW))
            c.score = _SIM_SHARE * relative + (1.0 - _SIM_SHARE) * c.score
        # Greedy MMR: relevance minus redundancy with what is already chosen; near-twins with the same
        # sentiment are dropped, so "한강뷰" and "한강 뷰 " do not both take a place.
        pairwise = topic_vectors @ topic_vectors.T
        remaining = list(range(len(candidates)))
        chosen: list[int] = []
        while remaining and len(chosen) < self.max_keywords:
            best_i, best_value = -1, -math.inf
            for i in list(remaining):
                twin = next(
                    (j for j in chosen if pairwise[i, j] >= _DUPLICATE_SIM
                     and candidates[i].sentiment == candidates[j].sentiment),
                    None,
                )  # fmt: skip
                if twin is not None:
                    remaining.remove(i)
                    continue
                redundancy = max((float(pairwise[i, j]) for j in chosen), default=0.0)
                value = candidates[i].score - _MMR_PENALTY * redundancy
                if value > best_value + 1e-12:
                    best_i, best_value = i, value
            if best_i < 0:
                break
            chosen.append(best_i)
            remaining.remove(best_i)
        return [candidates[i] for i in chosen]

    def _result(self, candidates: list[_Candidate], text: str) -> KeywordResult:
        ordered = sorted(candidates, key=lambda c: (-c.score, c.position))[: self.max_keywords]
        top = ordered[0].score if ordered else 1.0
        items = [
            {
                "term": c.term,
                "aspect": c.aspect if c.aspect in ASPECTS else OTHER_ASPECT,
                "sentiment": c.sentiment,
                "weight": round(min(1.0, max(0.0, c.score / top)), 3) if top > 0 else 1.0,
                "evidence": c.evidence,
            }
            for c in ordered
        ]
        try:
            keywords = validate_keywords(json.dumps({"keywords": items}, ensure_ascii=False), text)
        except InvalidOutput as exc:
            log.warning("local keywords failed validation: %s", exc.detail)
            return self._rejected(f"local_invalid_output: {exc.detail}")
        return KeywordResult(keywords, self.model, self.prompt_version)

    def _rejected(self, reason: str) -> KeywordResult:
        self._count(rejected=1)
        return KeywordResult((), self.model, self.prompt_version, error=reason)


def _prior(c: _Candidate, length: int) -> float:
    """What a candidate is worth before vectors: an aspect, an opinion, repeats, an early mention."""
    return (
        0.1
        + 0.3 * (c.aspect != OTHER_ASPECT)
        + 0.3 * (c.sentiment != "neutral")
        + 0.15 * min(c.count, 3) / 3
        + 0.15 * (1.0 - c.position / length)
    )
