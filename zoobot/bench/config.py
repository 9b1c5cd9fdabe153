"""What a benchmark run measures at: the user's settings (BenchmarkConfig, the CLI's options) and
the sizes they resolve to (Sizes), from the mode's preset and the settings' overrides."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

ARMS = "bald,random"  # the campaigns of figure 7
QUESTION = "smooth-or-featured"  # the question of the science figures 8 and 9
MEMORY_SCALE = 4  # the large pool is this many times the small one (10,000 -> 40,000 in full mode)
# the science figures in groups that can be measured alone (--figures): each group's figure numbers
SCIENCE_GROUPS = {"label_efficiency": "7", "calibration": "8-9", "transfer": "10-11"}
OVERRIDABLE = ("repeats", "image_size", "n_images", "convert_galaxies", "memory_pool", "science_galaxies")


@dataclass(frozen=True)
class BenchmarkConfig:
    quick: bool = field(default=False, metadata={
        "help": "Quick mode: speed and memory figures only, at smaller sizes (under 10 minutes on 2 cores). "
                "Science figures 7-11 are reported as null."})
    tiny: bool = field(default=False, metadata={
        "help": "The smallest sizes, to check that the harness runs (about a minute); the values mean little."})
    science: bool = field(default=False, metadata={
        "help": "Science mode: the science figures 7-11 alone, each over three seeds (mean and min-max), at the "
                "science sizes (at most an hour on 2 cores); no speed or memory figures."})
    with_science: bool = field(default=False, metadata={
        "help": "Also measure the science figures 7-11 in quick/tiny mode, at that mode's sizes (flagged)."})
    repeats: int = field(default=0, metadata={
        "help": "Repetitions per figure (0 = mode default: full 5, quick 3, tiny 1)."})
    output: str = field(default="data/benchmark.json", metadata={
        "help": "Where to write the JSON report (also logged as benchmark.json in the run)."})
    image_size: int = field(default=0, metadata={
        "help": "Image size of the speed figures 1-3 (0 = mode default: full and quick 64, tiny 16)."})
    n_images: int = field(default=0, metadata={
        "help": "Galaxies predicted and trained on in figures 1-3 (0 = mode default: full 2048, quick 1024, tiny 64)."})
    n_samples: int = field(default=30, metadata={"help": "MC-dropout samples T of figures 1, 5 and 6."})
    convert_galaxies: int = field(default=0, metadata={
        "help": "Images converted in figure 4 (0 = mode default: full 2000, quick 600, tiny 48)."})
    memory_pool: int = field(default=0, metadata={
        "help": f"Smaller pool of figure 5; the larger is {MEMORY_SCALE}x (0 = mode default: full 10000, "
                "quick 2500, tiny 200)."})
    science_galaxies: int = field(default=0, metadata={
        "help": "Simulated galaxies of the calibration model of figures 8-9 (0 = mode default: full and science "
                "3000, quick 600, tiny 120); the campaigns of figure 7 have their own survey."})
    figures: str = field(default="", metadata={
        "help": "Science figures to measure, comma-separated: label_efficiency (7), calibration (8-9, with the "
                "spread-error correlation), transfer (10-11); empty = all. The others are reported as null."})
    seed: int = field(default=0, metadata={"help": "Seed of the simulated surveys, models and splits."})
    work_dir: str = field(default="", metadata={
        "help": "Folder for the benchmark's data (default: a temporary folder, removed afterwards)."})

    def __post_init__(self):
        problems = []
        for name in OVERRIDABLE:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append(f"{name} must be a whole number >= 0 (0 = the mode's default), got {value!r}")
        if self.image_size and self.image_size < 16:
            problems.append(f"image_size must be >= 16 (the simulator's smallest), got {self.image_size}")
        if self.n_samples < 2:
            problems.append(f"n_samples must be >= 2, got {self.n_samples}")
        if self.n_images and self.n_images < 32:
            problems.append(f"n_images must be >= 32 (enough for a train, validation and test split), got "
                            f"{self.n_images}")
        if self.convert_galaxies and self.convert_galaxies < 32:
            problems.append(f"convert_galaxies must be >= 32 (fewer are converted without worker processes), "
                            f"got {self.convert_galaxies}")
        if self.science and (self.quick or self.tiny):
            problems.append("choose one of quick, tiny and science (each mode has its own sizes)")
        if self.science and self.with_science:
            problems.append("with_science adds the science figures to quick or tiny mode; science mode has them")
        unknown = [g for g in self.figure_groups if g not in SCIENCE_GROUPS]
        if unknown:
            problems.append(f"figures must be a comma-separated choice of {list(SCIENCE_GROUPS)}, got {unknown}")
        if not str(self.output).strip():
            problems.append("output must be a file path for the JSON report")
        if problems:
            raise ValueError("Invalid benchmark settings: " + "; ".join(problems) + ".")

    @property
    def figure_groups(self) -> tuple[str, ...]:
        return tuple(g.strip() for g in str(self.figures).split(",") if g.strip()) or tuple(SCIENCE_GROUPS)

    @property
    def mode(self) -> str:
        return "tiny" if self.tiny else "quick" if self.quick else "science" if self.science else "full"


@dataclass(frozen=True)
class Sizes:
    """Everything a run measures at, resolved from the mode and the config's overrides."""
    mode: str
    repeats: int
    image_size: int  # figures 1-3, and the CNN of figure 12
    efficientnet_size: int  # EfficientNetB0 of figure 12
    n_images: int
    naive_images: int  # the T-full-passes reference runs on the first this-many of them
    n_samples: int
    filters: str  # model of figures 1-3
    dense_units: int
    train_epochs: int  # per training run of figures 2-3
    batch_size: int
    convert_galaxies: int
    convert_source_size: int  # the PNGs being converted are this large (Galaxy Zoo shows 424x424)
    memory_pool: int
    memory_image_size: int
    science: bool  # measure figures 7-11
    speed: bool  # measure figures 1-6 and 12
    science_seeds: int  # each science figure over this many seeds
    science_galaxies: int
    science_image_size: int
    science_epochs: int
    al_initial: int
    al_acquire: int
    al_iterations: int
    al_epochs: int
    al_samples: int
    al_galaxies: int  # the campaigns' survey (science_galaxies is the calibration model's)
    transfer_labels: int  # figure 10: labelled training galaxies of the binary question
    transfer_epochs: int  # figure 10: epochs of the finetune (from scratch gets its CPU time)
    transfer_base_galaxies: int  # figures 10-11: simulated galaxies of the base tree model (trained once)
    warm_up: bool = True  # one untimed run of each path first (tiny mode skips it: its values mean little)
    science_groups: tuple[str, ...] = tuple(SCIENCE_GROUPS)  # the science figures measured (config.figures)


PRESETS = {
    "full": Sizes("full", repeats=5, image_size=64, efficientnet_size=224, n_images=2048, naive_images=512, n_samples=30,
                  filters="32,64,128,128", dense_units=128, train_epochs=3, batch_size=32, convert_galaxies=2000,
                  convert_source_size=424, memory_pool=10_000, memory_image_size=16, science=True, speed=True,
                  science_seeds=1, science_galaxies=3000, science_image_size=64, science_epochs=30, al_initial=100,
                  al_acquire=50, al_iterations=4, al_epochs=40, al_samples=15, al_galaxies=3000,
                  transfer_labels=300, transfer_epochs=30, transfer_base_galaxies=12_000),
    "quick": Sizes("quick", repeats=3, image_size=64, efficientnet_size=224, n_images=1024, naive_images=256, n_samples=30,
                   filters="32,64,128,128", dense_units=128, train_epochs=3, batch_size=32, convert_galaxies=600,
                   convert_source_size=424, memory_pool=2500, memory_image_size=16, science=False, speed=True,
                   science_seeds=1, science_galaxies=600, science_image_size=32, science_epochs=4, al_initial=64,
                   al_acquire=32, al_iterations=3, al_epochs=3, al_samples=10, al_galaxies=600,
                   transfer_labels=64, transfer_epochs=3, transfer_base_galaxies=600),
    "tiny": Sizes("tiny", repeats=1, image_size=16, efficientnet_size=32, n_images=64, naive_images=32, n_samples=30,
                  filters="4,8", dense_units=16, train_epochs=1, batch_size=16, convert_galaxies=48,
                  convert_source_size=64, memory_pool=200, memory_image_size=16, science=False, speed=True,
                  science_seeds=1, science_galaxies=120, science_image_size=32, science_epochs=1, al_initial=24,
                  al_acquire=8, al_iterations=2, al_epochs=1, al_samples=4, al_galaxies=120,
                  transfer_labels=16, transfer_epochs=2, transfer_base_galaxies=120, warm_up=False),
}


# figures 7-11 alone, over seeds: what the science is judged by (at most an hour on 2 cores)
PRESETS["science"] = replace(PRESETS["full"], mode="science", repeats=1, speed=False, science_seeds=3)


def resolve_sizes(config: BenchmarkConfig) -> Sizes:
    sizes = PRESETS[config.mode]
    overrides = {name: getattr(config, name) for name in OVERRIDABLE if getattr(config, name)}
    sizes = replace(sizes, **overrides, n_samples=config.n_samples, science=sizes.science or config.with_science,
                    science_groups=config.figure_groups)
    return replace(sizes, naive_images=min(sizes.naive_images, sizes.n_images))


def campaign_config(shards, root, sizes: Sizes, seed: int):
    """The campaign `zoobot active_learning` runs by default, at the benchmark's sizes."""
    from zoobot.workflows.campaign import CampaignConfig

    return CampaignConfig(shards=str(shards), work_dir=str(root / "campaign"), arms=ARMS,
                          iterations=sizes.al_iterations, n_acquire=sizes.al_acquire, n_samples=sizes.al_samples,
                          epochs=sizes.al_epochs, seed=seed)
