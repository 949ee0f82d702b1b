"""`hf-hope prepare-data`: build the continual-learning datasets into the cache and say where they are."""

from pathlib import Path

from ..data.prepare import (
    DataPreparationSettings,
    manifest_of,
    prepare_clinc,
    prepare_domains,
    prepare_retention,
    resolve_cache_dir,
)


def run_data_preparation(settings: DataPreparationSettings) -> Path:
    """`hf-hope prepare-data`: build the chosen benchmarks and say where they are and how big."""
    folders = []
    if settings.benchmark in ("all", "domains"):
        folders.append(prepare_domains(settings))
    if settings.benchmark in ("all", "clinc"):
        folders.append(prepare_clinc(settings))
    if settings.benchmark in ("all", "retention"):
        folders.append(prepare_retention(settings))
    for folder in folders:
        manifest = manifest_of(folder)
        print(f"{folder} (built in {manifest['seconds']:.1f} s):")
        if "retention" in manifest:
            size = manifest["sizes"]["validation"]
            print(
                f"  retention ({manifest['retention']}): {size['documents']} pages / {size['characters']:,} characters"
            )
        elif "domains" in manifest:
            for domain, splits in manifest["sizes"].items():
                figures = ", ".join(
                    f"{split} {size['documents']} documents / {size['characters']:,} characters"
                    for split, size in splits.items()
                )
                print(f"  {domain}: {figures}")
        else:
            for index, (intents, size) in enumerate(zip(manifest["tasks"], manifest["sizes"], strict=True)):
                print(f"  task {index:2d}: intents {intents}, {size['train']} train / {size['validation']} validation")
    return resolve_cache_dir(settings.cache_dir)
