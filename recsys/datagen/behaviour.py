"""What users do on one day: sessions of plays, likes, follows, playlist adds, and clicks on
recommendation blocks. Each day has its own random stream, so day N is the same whether it was
generated in one run or appended later.

Sessions: Poisson(user activity x weekday factor) per day, starting mostly in the evening;
1 + Poisson(8) plays each, 85% from the user's library (by true affinity), 15% discovery:
`SCENE_DISCOVERY` of it within the user's scenes (radio, related artists: long tail included),
the rest from the charts (global popularity). Completion follows affinity: library plays finish
more and skip less.

Click model (documented for the feedback analyses to rediscover): a recommendation block shows
10 artists; each is clicked with probability

    sigmoid(-2.6 + 3.0 * affinity - 0.25 * position + 0.25 * log10(followers) / 7
            + 0.8 * [artist_rank <= 20] + 0.5 * [first genre is the user's top genre])

where affinity = min(library weight x 60, 3) / 3 in [0, 1] (0 outside the library). The last
two terms are the planted card-feature effects: a "trending" badge and a genre match. Both
variants fill half of the block from the user's library and half by popularity; variant "B"
(model `als-v2`) picks library artists by true affinity, variant "A" (`als-v1`) uniformly, so
B's CTR is truly higher.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import accumulate

import numpy as np

from recsys.datagen.world import CITIES, GENRES, LIBRARY_SIZE, Catalog, Population, rng_for

DEVICES = (("android", "9.1.2"), ("ios", "9.1.0"), ("web", "2026.11"), ("desktop", "3.4.1"))
SOURCES = ("library", "search", "playlist", "radio", "recommendation")
VARIANT_MODEL = {"A": "als-v1", "B": "als-v2"}
BLOCK_SIZE = 10
SCENE_DISCOVERY = 0.6  # of non-library plays: within the user's scenes; the rest from the charts
# Hour-of-day weights for session starts: quiet nights, evening peak.
_HOURS = (1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3, 3, 3, 3.5, 3.5, 3, 3, 3.5, 4, 5, 6, 6.5, 6, 4, 2)
HOUR_CDF = [c / sum(_HOURS) for c in accumulate(_HOURS)]
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class Event:
    """One generated event: the contract payload, when it happened and when it arrives (epoch ms)."""

    payload: dict
    ts_ms: int
    arrival_ms: int


def variant_of(user_index: int) -> str:
    """The A/B variant a generated user's simulated clicks follow (half A, half B, fixed per user)."""
    return "B" if (user_index * 2654435761) % 100 < 50 else "A"


def iso(ts_ms: int) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, the contract's usual form."""
    ts = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return f"{ts:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}Z"


class DayGenerator:
    """Generates one day's events for every user, in no particular order.

    Scalar draws use `random.Random` (seeded from the day's numpy stream): an order of magnitude
    cheaper per call than numpy's, which matters at 10 million events.
    """

    def __init__(self, seed: int, catalog: Catalog, population: Population, day_index: int, day: date):
        self.catalog, self.pop = catalog, population
        np_rng = rng_for(seed, "day", day_index)
        self.rnd = random.Random(int(np_rng.integers(2**63)))
        self.day_ms = int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1000)
        self.weekend = day.weekday() >= 5
        # The day's chart: popularity with daily noise, rank 1 = most played.
        noise = np_rng.lognormal(0, 0.25, catalog.n_artists)
        chart_rank = np.empty(catalog.n_artists, dtype=np.int64)
        chart_rank[np.argsort(-catalog.popularity * noise)] = np.arange(1, catalog.n_artists + 1)
        self.chart_rank = chart_rank.tolist()
        self.followers = (catalog.followers * (1 + day_index * 0.002)).astype(np.int64).tolist()
        self.pop_cdf = np.cumsum(catalog.popularity).tolist()
        self.sessions = np_rng.poisson(population.activity * (1.3 if self.weekend else 1.0))
        self.track_likes = catalog.track_likes.tolist()
        self.durations = catalog.track_duration_ms.tolist()

    def events(self) -> Iterator[Event]:
        """Every event of the day's sessions, user by user, in time order within each session."""
        for u in np.flatnonzero(self.sessions).tolist():
            library = self.pop.library[u].tolist()
            library_cdf = list(accumulate(self.pop.library_weight[u].tolist()))
            for _ in range(int(self.sessions[u])):
                yield from self._session(u, library, library_cdf)

    def _discovered_artist(self, u: int) -> int:
        """An artist off the user's library: from one of their scenes, or from the charts."""
        rnd = self.rnd
        if rnd.random() >= SCENE_DISCOVERY:
            return self._popular_artist()
        scenes, weights = self.pop.scenes[u], self.pop.scene_weight[u]
        scene = int(scenes[min(bisect.bisect_right(list(accumulate(weights.tolist())), rnd.random()), len(scenes) - 1)])
        members, cdf = self.catalog.scene_members[scene], self.catalog.scene_cdf[scene]
        return int(members[min(bisect.bisect_right(cdf, rnd.random()), len(members) - 1)])

    def _uuid(self) -> str:
        h = f"{self.rnd.getrandbits(128) & ~(0xF << 76) | (0x4 << 76):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _popular_artist(self) -> int:
        return min(bisect.bisect_right(self.pop_cdf, self.rnd.random()), self.catalog.n_artists - 1)

    def _session(self, u: int, library: list[int], library_cdf: list[float]) -> Iterator[Event]:
        rnd = self.rnd
        hour = bisect.bisect_right(HOUR_CDF, rnd.random())
        t = self.day_ms + min(hour, 23) * HOUR_MS + int(rnd.random() * HOUR_MS)
        device, version = DEVICES[rnd.randrange(len(DEVICES))]
        context: dict[str, object] = {"session_id": f"s-{self._uuid()[:13]}", "device_os": device,
                                      "app_version": version, "source": SOURCES[rnd.randrange(len(SOURCES))]}
        if rnd.random() < 0.3:
            city = CITIES[self.pop.home_city[u]]
            context["geo"] = {"lat": round(city[1] + rnd.gauss(0, 0.02), 5),
                              "lon": round(city[2] + rnd.gauss(0, 0.02), 5)}
        if rnd.random() < 0.25:
            yield from self._recommendation_block(u, t, context, library, library_cdf)
            t += int(rnd.uniform(5_000, 60_000))
        for _ in range(1 + int(self._poisson(8))):
            from_library = rnd.random() < 0.85
            if from_library:
                artist = library[min(bisect.bisect_right(library_cdf, rnd.random()), LIBRARY_SIZE - 1)]
            else:
                artist = self._discovered_artist(u)
            event, played_ms = self._play(u, artist, t, context, from_library)
            yield event
            yield from self._reactions(u, event.payload["card"], t, context, from_library)
            t += played_ms + rnd.randrange(200, 5000)

    def _poisson(self, lam: float) -> int:
        limit, k, p = math.exp(-lam), 0, self.rnd.random()
        while p > limit:
            k += 1
            p *= self.rnd.random()
        return k

    def _card(self, artist: int, track: int | None = None) -> dict:
        c = self.catalog
        card = {
            "artist_id": c.artist_ids[artist],
            "artist_name": c.artist_names[artist],
            "genre": list(c.artist_genres[artist]),
            "artist_rank": self.chart_rank[artist],
            "artist_followers": self.followers[artist],
        }
        if track is not None:
            card["track_id"] = c.track_ids[track]
            card["track_name"] = c.track_names[track]
            card["album_name"] = f"{c.artist_names[artist]} Vol. {track % 3 + 1}"
            card["track_likes"] = self.track_likes[track]
        return card

    def _event(self, event_type: str, u: int, ts_ms: int, card: dict, context: dict, **extra: object) -> Event:
        rnd = self.rnd
        payload = {"event_id": self._uuid(), "event_type": event_type, "event_ts": iso(ts_ms),
                   "user_id": self.pop.user_ids[u], "card": card, "context": dict(context), **extra}
        delay = rnd.expovariate(1 / 1_200_000) if rnd.random() > 0.02 else rnd.uniform(HOUR_MS, 20 * HOUR_MS)
        return Event(payload, ts_ms, ts_ms + int(delay))

    def _play(self, u: int, artist: int, t: int, context: dict, from_library: bool) -> tuple[Event, int]:
        rnd = self.rnd
        tracks = self.catalog.artist_tracks[artist]
        track = int(tracks[rnd.randrange(len(tracks))])
        duration = self.durations[track]
        roll = rnd.random()
        p_full, p_skip = (0.65, 0.10) if from_library else (0.30, 0.40)
        if roll < p_full:
            played = int(duration * rnd.uniform(0.8, 1.0))
        elif roll < p_full + p_skip:
            played = int(min(rnd.uniform(1_000, 29_000), duration * 0.45))
        else:
            played = int(duration * rnd.uniform(0.3, 0.79))
        card = self._card(artist, track)
        card["duration_ms"] = duration
        card["played_ms"] = played
        if rnd.random() < 0.2:
            card["volume"] = [min(100, max(0, int(rnd.gauss(60, 10)))) for _ in range(4)]
        return self._event("play", u, t, card, context), played

    def _reactions(self, u: int, card: dict, t: int, context: dict, from_library: bool) -> Iterator[Event]:
        rnd = self.rnd
        boost = 3.0 if from_library else 1.0
        later = t + int(rnd.uniform(5_000, 120_000))
        track_card = {k: v for k, v in card.items() if k not in ("duration_ms", "played_ms", "volume")}
        if rnd.random() < 0.015 * boost:
            yield self._event("like", u, later, dict(track_card), context)
        if rnd.random() < 0.002:
            yield self._event("unlike", u, later, dict(track_card), context)
        if rnd.random() < 0.006 * boost:
            playlist = {"playlist_id": f"pl-{self.pop.user_ids[u]}-{rnd.randrange(1, 4)}", "playlist_name": "Mix"}
            yield self._event("playlist_add", u, later, dict(track_card), context, playlist=playlist)
        artist_card = {k: v for k, v in track_card.items()
                       if k not in ("track_id", "track_name", "album_name", "track_likes")}
        if rnd.random() < 0.003 * boost:
            yield self._event("follow", u, later, artist_card, context)
        if rnd.random() < 0.0015:
            yield self._event("unfollow", u, later, dict(artist_card), context)

    def _recommendation_block(
        self, u: int, t: int, context: dict, library: list[int], library_cdf: list[float]
    ) -> Iterator[Event]:
        rnd = self.rnd
        variant = variant_of(u)
        request_id = f"r-{self._uuid()}"
        shown: dict[int, None] = {}
        while len(shown) < BLOCK_SIZE:
            if rnd.random() >= 0.5:
                pick = self._popular_artist()
            elif variant == "B":
                pick = library[min(bisect.bisect_right(library_cdf, rnd.random()), LIBRARY_SIZE - 1)]
            else:
                pick = library[rnd.randrange(LIBRARY_SIZE)]
            shown.setdefault(pick, None)
        weights = dict(zip(library, self.pop.library_weight[u].tolist(), strict=True))
        top_genre = GENRES[self.pop.top_genre[u]]
        ctx = dict(context, source="recommendation")
        for position, artist in enumerate(shown):
            affinity = min(weights.get(artist, 0.0) * LIBRARY_SIZE, 3.0) / 3.0
            score = round(max(-1.0, min(1.0, affinity + rnd.gauss(0, 0.15))), 4)
            rec = {"request_id": request_id, "model_version": VARIANT_MODEL[variant], "variant": variant,
                   "position": position, "score": score}
            card = self._card(artist)
            yield self._event("impression", u, t, card, ctx, recommendation=rec)
            logit = (-2.6 + 3.0 * affinity - 0.25 * position
                     + 0.25 * math.log10(1 + card["artist_followers"]) / 7
                     + 0.8 * (card["artist_rank"] <= 20)
                     + 0.5 * (card["genre"][0] == top_genre))
            if rnd.random() < 1 / (1 + math.exp(-logit)):
                click_ts = t + int(rnd.uniform(1_000, 30_000))
                yield self._event("click", u, click_ts, dict(card), ctx, recommendation=dict(rec))
