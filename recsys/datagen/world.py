"""The generated world: a catalog of artists and tracks, and users with latent tastes.

Everything is drawn from `numpy` generators seeded by `(seed, purpose)`, so the same seed gives
the same world whatever else is generated, and appending days later sees the same users.

- Artists have Zipf-like popularity (exponent 1.1) and belong to one *scene* of about
  `SCENE_SIZE` artists (a micro-genre: the artists one crowd plays together); a scene sits in
  one genre, and an artist may carry a second genre. Each has 3-12 tracks with log-normal
  durations around 3.5 minutes.
- A user's taste is a Dirichlet mix over genres and a few scenes picked by it; their *library*
  is 60 artists, `SCENE_SHARE` of them from their scenes (long tail included: popularity^0.5
  within a scene), the rest genre-wide by popularity^0.8, with log-normal weights. The library
  weights are the user's true affinities: plays, likes, follows and clicks all follow them.

Why scenes: in real listening data, who plays an artist predicts who plays which *other*
artists far beyond genre and popularity (Last.fm's similar artists, taste clusters), and that is
the signal collaborative filtering finds. Libraries drawn independently within 15 broad genres
carried almost none: an oracle of each user's genre mix only reached 1.15x the NDCG of global
popularity, so no model could beat popularity clearly. `behaviour.py` makes discovery follow
scenes too (radio, related artists), as it does on real services.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

GENRES = (
    "rock", "pop", "hip-hop", "electronic", "jazz", "classical", "metal", "folk",
    "indie", "r&b", "country", "latin", "reggae", "blues", "punk",
)
LIBRARY_SIZE = 60
ZIPF_EXPONENT = 1.1
SCENE_SIZE = 25  # artists per scene, on average
SCENES_PER_USER = 4
SCENE_SHARE = 0.8  # of a library drawn from the user's scenes

# Real cities (name, lat, lon, ISO country): accounts sit within a few km of one.
CITIES = (
    ("New York", 40.7128, -74.0060, "US"), ("Los Angeles", 34.0522, -118.2437, "US"),
    ("Chicago", 41.8781, -87.6298, "US"), ("Houston", 29.7604, -95.3698, "US"),
    ("London", 51.5074, -0.1278, "GB"), ("Manchester", 53.4808, -2.2426, "GB"),
    ("Berlin", 52.5200, 13.4050, "DE"), ("Munich", 48.1351, 11.5820, "DE"),
    ("Paris", 48.8566, 2.3522, "FR"), ("Lyon", 45.7640, 4.8357, "FR"),
    ("Madrid", 40.4168, -3.7038, "ES"), ("Barcelona", 41.3874, 2.1686, "ES"),
    ("São Paulo", -23.5505, -46.6333, "BR"), ("Rio de Janeiro", -22.9068, -43.1729, "BR"),
    ("Tokyo", 35.6762, 139.6503, "JP"), ("Osaka", 34.6937, 135.5023, "JP"),
    ("Mumbai", 19.0760, 72.8777, "IN"), ("Bengaluru", 12.9716, 77.5946, "IN"),
    ("Sydney", -33.8688, 151.2093, "AU"), ("Melbourne", -37.8136, 144.9631, "AU"),
    ("Toronto", 43.6532, -79.3832, "CA"), ("Mexico City", 19.4326, -99.1332, "MX"),
    ("Stockholm", 59.3293, 18.0686, "SE"), ("Lagos", 6.5244, 3.3792, "NG"),
)

_SYLLABLES = (
    "ra", "dio", "head", "por", "tis", "bjo", "ka", "lu", "mi", "no", "sta", "vel", "or", "an",
    "gel", "tri", "be", "sun", "moon", "ze", "pha", "rix", "lo", "ve", "syn", "thia", "dre", "am",
)
_ACCENTED = {"e": "é", "o": "ö", "a": "á", "n": "ñ", "u": "ü"}
_FIRST = ("Anna", "Ben", "Chloé", "David", "Elif", "Femi", "Grace", "Hiro", "Inès", "Jonas",
          "Kavya", "Liam", "María", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sven", "Tariq")
_LAST = ("Smith", "Müller", "García", "Dubois", "Tanaka", "Singh", "Silva", "Johansson",
         "Okafor", "Brown", "Rossi", "Nguyen", "Kowalski", "López", "Cohen", "Wilson")


def rng_for(seed: int, *purpose: int | str) -> np.random.Generator:
    """A generator for one purpose of one seed, independent of every other purpose."""
    words = [seed, *(p if isinstance(p, int) else int.from_bytes(p.encode()[:8], "little") for p in purpose)]
    return np.random.default_rng(words)


@dataclass(frozen=True)
class Catalog:
    """The generated artists and tracks: names, genres, scenes, popularity and follower counts."""
    artist_ids: list[str]
    artist_names: list[str]
    artist_genres: list[list[str]]
    genre_matrix: np.ndarray  # (artists, genres) 0/1
    popularity: np.ndarray  # (artists,) sums to 1
    followers: np.ndarray  # (artists,) displayed follower counts at the start
    track_ids: list[str]
    track_names: list[str]
    track_artist: np.ndarray  # (tracks,) artist index
    track_duration_ms: np.ndarray  # (tracks,)
    track_likes: np.ndarray  # (tracks,) displayed like counts
    artist_tracks: list[np.ndarray]  # per artist, its track indices
    scene_members: list[np.ndarray]  # per scene, its artist indices
    scene_cdf: list[np.ndarray]  # per scene, cumulative popularity^0.5 of its members (long tail)
    scene_genre: np.ndarray  # (scenes,) genre index

    @property
    def n_artists(self) -> int:
        """How many artists the catalog has."""
        return len(self.artist_ids)


@dataclass(frozen=True)
class Population:
    """The generated users: tastes, activity, libraries of artists with affinities, home towns."""
    user_ids: list[str]
    taste: np.ndarray  # (users, genres) Dirichlet
    top_genre: np.ndarray  # (users,) index of the strongest genre
    activity: np.ndarray  # (users,) mean sessions per day
    library: np.ndarray  # (users, LIBRARY_SIZE) artist indices
    library_weight: np.ndarray  # (users, LIBRARY_SIZE) true affinity, rows sum to 1
    home_city: np.ndarray  # (users,) index into CITIES
    scenes: np.ndarray  # (users, SCENES_PER_USER) scene indices
    scene_weight: np.ndarray  # (users, SCENES_PER_USER) rows sum to 1

    @property
    def n_users(self) -> int:
        """How many users the population has."""
        return len(self.user_ids)


def _name(rng: np.random.Generator, words: int) -> str:
    parts = []
    for _ in range(words):
        word = "".join(rng.choice(_SYLLABLES, size=rng.integers(2, 4)))
        parts.append(word.capitalize())
    name = " ".join(parts)
    roll = rng.random()
    if roll < 0.12:  # Unicode, composed (NFC) as a catalog would display it
        for plain, accented in _ACCENTED.items():
            if plain in name:
                name = name.replace(plain, accented, 1)
                break
    elif roll < 0.20:
        name = "The " + name
    elif roll < 0.25:
        name = name + "!"
    elif roll < 0.30:
        name = name.replace(" ", " & ", 1) if " " in name else name + " & Co."
    return unicodedata.normalize("NFC", name)


def build_catalog(seed: int, n_artists: int) -> Catalog:
    """A Zipf-popular catalog of `n_artists` artists grouped into genre scenes, the same for the same seed."""
    rng = rng_for(seed, "catalog")
    ranks = rng.permutation(n_artists) + 1
    popularity = 1.0 / ranks**ZIPF_EXPONENT
    popularity /= popularity.sum()
    n_scenes = max(len(GENRES), n_artists // SCENE_SIZE)
    scene_genre = np.arange(n_scenes) % len(GENRES)
    scene = rng.integers(0, n_scenes, size=n_artists)
    genre_matrix = np.zeros((n_artists, len(GENRES)), dtype=np.float32)
    artist_genres, names, seen = [], [], set()
    for a in range(n_artists):
        home = int(scene_genre[scene[a]])
        picks = [home] if rng.random() < 0.6 else [home, int((home + rng.integers(1, len(GENRES))) % len(GENRES))]
        genre_matrix[a, picks] = 1.0
        artist_genres.append([GENRES[g] for g in picks])  # the scene's genre first
        name = _name(rng, int(rng.integers(1, 3)))
        while name.casefold() in seen:
            name = _name(rng, int(rng.integers(1, 4)))
        seen.add(name.casefold())
        names.append(name)
    followers = np.round(popularity * 5e7 * rng.lognormal(0, 0.3, n_artists)).astype(np.int64)

    per_artist = rng.integers(3, 13, size=n_artists)
    track_artist = np.repeat(np.arange(n_artists), per_artist)
    n_tracks = len(track_artist)
    durations = np.clip(rng.lognormal(np.log(210_000), 0.3, n_tracks), 60_000, 900_000).astype(np.int64)
    likes = np.round(popularity[track_artist] * 2e6 * rng.lognormal(0, 0.6, n_tracks)).astype(np.int64)
    track_names = [_name(rng, int(rng.integers(1, 4))) for _ in range(n_tracks)]
    offsets = np.concatenate([[0], np.cumsum(per_artist)])
    members = [np.flatnonzero(scene == c) for c in range(n_scenes)]
    return Catalog(
        artist_ids=[str(a + 1) for a in range(n_artists)],
        artist_names=names,
        artist_genres=artist_genres,
        genre_matrix=genre_matrix,
        popularity=popularity,
        followers=followers,
        track_ids=[str(100_000 + t) for t in range(n_tracks)],
        track_names=track_names,
        track_artist=track_artist,
        track_duration_ms=durations,
        track_likes=likes,
        artist_tracks=[np.arange(offsets[a], offsets[a + 1]) for a in range(n_artists)],
        scene_members=members,
        scene_cdf=[_cdf(popularity[m] ** 0.5) for m in members],
        scene_genre=scene_genre,
    )


GENDERS = ("f", "m", "x", None)

def _cdf(weights: np.ndarray) -> np.ndarray:
    return np.cumsum(weights) / weights.sum() if len(weights) else weights


def _pick(members: np.ndarray, cdf: np.ndarray, rng: np.random.Generator) -> int | None:
    return int(members[min(int(np.searchsorted(cdf, rng.random())), len(members) - 1)]) if len(members) else None


def build_population(seed: int, n_users: int, catalog: Catalog) -> Population:
    """`n_users` users whose libraries come mostly from a few scenes of their favourite genres."""
    rng = rng_for(seed, "population")
    taste = rng.dirichlet(np.full(len(GENRES), 0.3), size=n_users).astype(np.float32)
    # Within each genre, artists are picked by popularity^0.8: tastes lean popular, not only.
    by_genre = []
    for g in range(len(GENRES)):
        members = np.flatnonzero(catalog.genre_matrix[:, g])
        by_genre.append((members, _cdf(catalog.popularity[members] ** 0.8)))
    # A user's scenes: drawn by their genre taste times the scene's size, without repeats.
    n_scenes = len(catalog.scene_members)
    sizes = np.array([len(m) for m in catalog.scene_members], dtype=np.float64)
    scene_p = taste[:, catalog.scene_genre].astype(np.float64) * sizes[None, :] + 1e-12
    per_user = min(SCENES_PER_USER, int((sizes > 0).sum()))
    scenes = np.stack([rng.choice(n_scenes, size=per_user, replace=False, p=p / p.sum()) for p in scene_p])
    scene_weight = rng.dirichlet(np.ones(per_user), size=n_users)
    library = np.empty((n_users, LIBRARY_SIZE), dtype=np.int32)
    for u in range(n_users):
        genre_draws = rng.choice(len(GENRES), size=LIBRARY_SIZE * 4, p=taste[u] / taste[u].sum())
        scene_draws = rng.choice(scenes[u], size=LIBRARY_SIZE * 4, p=scene_weight[u])
        from_scene = rng.random(LIBRARY_SIZE * 4) < SCENE_SHARE
        picked: dict[int, None] = {}
        for g, c, scene_pick in zip(genre_draws, scene_draws, from_scene, strict=True):
            artist = _pick(catalog.scene_members[c], catalog.scene_cdf[c], rng) if scene_pick \
                else _pick(by_genre[g][0], by_genre[g][1], rng)
            if artist is not None:
                picked.setdefault(artist, None)
            if len(picked) == LIBRARY_SIZE:
                break
        while len(picked) < LIBRARY_SIZE:  # tiny catalogs: fill with popular artists
            picked.setdefault(int(rng.choice(catalog.n_artists, p=catalog.popularity)), None)
        library[u] = list(picked)
    weight = rng.lognormal(0, 1.0, size=(n_users, LIBRARY_SIZE)).astype(np.float32)
    weight = -np.sort(-weight, axis=1)
    weight /= weight.sum(axis=1, keepdims=True)
    return Population(
        user_ids=[str(1000 + u) for u in range(n_users)],
        taste=taste,
        top_genre=taste.argmax(axis=1),
        activity=rng.lognormal(np.log(0.5), 0.6, size=n_users),
        library=library,
        library_weight=weight,
        home_city=rng.integers(0, len(CITIES), size=n_users),
        scenes=scenes,
        scene_weight=scene_weight.astype(np.float32),
    )


def accounts(seed: int, population: Population, start: date) -> list[dict]:
    """The account service's rows for the population, with PII and realistic NULLs."""
    rng = rng_for(seed, "accounts")
    rows = []
    for u, user_id in enumerate(population.user_ids):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        city = CITIES[population.home_city[u]]
        age_days = int(rng.integers(13 * 365, 80 * 365))
        has_coords = rng.random() > 0.10
        signup = datetime.combine(start, datetime.min.time(), UTC) - timedelta(days=int(rng.integers(1, 900)))
        rows.append({
            "user_id": user_id,
            "full_name": f"{first} {last}",
            "email": f"{first}.{last}.{user_id}@example.com".lower(),
            "date_of_birth": None if rng.random() < 0.06 else start - timedelta(days=age_days),
            "gender": GENDERS[rng.choice(len(GENDERS), p=[0.45, 0.45, 0.04, 0.06])],
            "latitude": float(city[1] + rng.normal(0, 0.03)) if has_coords else None,
            "longitude": float(city[2] + rng.normal(0, 0.03)) if has_coords else None,
            "country_code": None if (not has_coords and rng.random() < 0.5) or rng.random() < 0.03 else city[3],
            "signup_at": signup,
        })
    return rows
