"""Rebuild the embedded demo set from the team's licensed source images (maintainers only).

python scripts/make_demo_data.py --source ../shared/data --out src/stylegan_transfer/assets/demo

Domain A: public-domain landscape photos (Debian endless-sky-data), one centred square each.
Domain B: public-domain paintings by Van Gogh and the Impressionists (Debian gcompris-qt-data): four square crops
of each training painting; one centre square of each held-out painting (`HELD_OUT`), so the validation grid shows
six different paintings none of which was trained on. Everything is downscaled to 128x128 JPEG to keep the
package small.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

from PIL import Image

SIZE = 128
# Not public domain in the package's copyright file (CC-BY-SA): left out so the whole demo set is free to ship.
CC_LICENSED = re.compile(r"bwerner|myrabella|dmottl|mfield|sfiera|striker|harro|iridium|spfld|^lava5")
PAINTERS = re.compile(r"vangogh|Van_Gogh|Renoir|Cassatt|Bazille")
N_TRAIN_PHOTOS, N_TEST = 64, 6
# The paintings of testB (whole paintings held out, one per validation row): 6 of the 13, mixed painters.
HELD_OUT = (
    "Bazille_The_Ramparts_at_Aigues_Mortes_18",
    "Mary_Cassatt_Summertime_1894",
    "Pierre_Auguste_Renoir_Girls_At_The_Piano",
    "vangogh_Van_Gogh_The_Night_Cafe",
    "vangogh_VincentVanGogh0019",
    "vangogh_VincentVanGoghBridge",
)


def square(image: Image.Image, fx: float) -> Image.Image:
    """The largest square whose centre sits at fraction `fx` along the long side."""
    w, h = image.size
    s = min(w, h)
    if w >= h:
        x = round((w - s) * fx)
        return image.crop((x, 0, x + s, s))
    y = round((h - s) * fx)
    return image.crop((0, y, s, y + s))


def save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS).save(path, quality=90, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, required=True, help="folder with photos/ paintings/ licenses/")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    photos = sorted(p for p in (args.source / "photos").glob("*.jpg") if not CC_LICENSED.search(p.name))
    step = max(1, len(photos) // (N_TRAIN_PHOTOS + N_TEST))
    photos = photos[::step][: N_TRAIN_PHOTOS + N_TEST]
    for i, path in enumerate(photos):
        split = "testA" if i % 11 == 5 and sum(1 for j in range(i) if j % 11 == 5) < N_TEST else "trainA"
        save(square(Image.open(path), 0.5), args.out / split / f"{path.stem}.jpg")
    paintings = sorted(
        p for p in (args.source / "paintings").glob("gcompris_*.jpg") if PAINTERS.search(p.name)
    )
    missing = set(HELD_OUT) - {p.stem.removeprefix("gcompris_") for p in paintings}
    if missing:
        raise SystemExit(f"{args.source / 'paintings'}: held-out paintings not found: {sorted(missing)}")
    for path in paintings:
        image = Image.open(path)
        if path.stem.removeprefix("gcompris_") in HELD_OUT:
            save(square(image, 0.5), args.out / "testB" / f"{path.stem}_1.jpg")
            continue
        split = "trainB"
        for fx in (0.0, 0.5, 1.0):
            save(square(image, fx), args.out / split / f"{path.stem}_{int(fx * 2)}.jpg")
        w, h = image.size  # plus a zoomed-in centre crop for brush-stroke detail
        save(
            image.crop((w // 4, h // 4, w // 4 + min(w, h) // 2, h // 4 + min(w, h) // 2)),
            args.out / split / f"{path.stem}_zoom.jpg",
        )
    write_attribution(args.out)
    for split in ("trainA", "trainB", "testA", "testB"):
        print(split, len(list((args.out / split).glob("*.jpg"))))


def write_attribution(out: Path) -> None:
    lines = [
        "# Attribution of the embedded demo images",
        "",
        "Every image here is a 128x128 JPEG derived (square crop, downscale) from a Debian package.",
        "",
        "## trainA/ testA/ - landscape photographs (domain A)",
        "",
        "Source: Debian package `endless-sky-data` 0.9.8, `images/land/<same name>.jpg`. Licence: public domain",
        "(the package's copyright file: `images/land/*` taken from morguefile.com and unsplash.com, photographs",
        "donated and placed in the public domain; the USGS and NASA ones are public-domain government works).",
        "Files the copyright file lists under CC-BY-SA (bwerner*, myrabella*, dmottl*, mfield*, *-sfiera*,",
        "*-striker*, *-harro*, *-iridium*, *-spfld*, lava5*) are not included.",
        "",
        "## trainB/ testB/ - paintings (domain B)",
        "",
        "Source: Debian package `gcompris-qt-data` 3.1 (`paintings` activity; WebMuseum reproductions). The works",
        "are in the public domain (the painters died more than 70 years ago); the package lists the reproductions",
        "as GPL-3+. File names say the painter and work; `_0`, `_1`, `_2` are left, centre and right squares,",
        "`_zoom` the central quarter.",
        "",
        "| file | painter / work |",
        "|---|---|",
    ]
    for path in sorted((out / "trainB").glob("*.jpg")) + sorted((out / "testB").glob("*.jpg")):
        stem = re.sub(r"_(0|1|2|zoom)$", "", path.stem).removeprefix("gcompris_")
        lines.append(f"| `{path.parent.name}/{path.name}` | {stem.replace('_', ' ')} |")
    (out / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
