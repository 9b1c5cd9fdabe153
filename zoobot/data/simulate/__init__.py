"""A simulated Galaxy Zoo survey: images and volunteer votes from known morphology.

Every galaxy starts as a latent description (`Galaxy`: bulge fraction, arm strength, arm count and
pitch, bar strength, inclination, companions, brightness, observing depth), drawn in
`morphology`. The same description is used twice:

1. rendered into a g, r, z image (`render`): Sersic bulge and disc, spiral arms, bar, companions
   and tidal tails, bright stars and satellite trails, PSF, sky and Poisson noise;
2. turned into the probability of each answer of the decision tree, from what a volunteer could
   see (faint galaxies hide their features), from which the votes are drawn question by question
   (`volunteers`).

So the votes are learnable from the images, and the truth behind them is in the catalog
(`true_*` answer probabilities, `sim_*` morphology) for tests and for checking calibration.
`survey` puts it together: the config, the worker processes and the staged output folder.

Sizes are fractions of the image width, so the same seed gives the same galaxies and the same
votes at any image_size: only the pixel sampling changes. No TensorFlow or MLflow here.
"""

from zoobot.data.simulate.morphology import Companion, Galaxy, sample_galaxy
from zoobot.data.simulate.render import BANDS, flux_to_rgb, render_galaxy
from zoobot.data.simulate.survey import (
    CATALOG,
    IMAGE_FORMATS,
    RECORD,
    SCHEMAS,
    SimulateConfig,
    SimulationResult,
    iau_name,
    simulate_survey,
)
from zoobot.data.simulate.volunteers import (
    ENDS_CLASSIFICATION,
    MIN_VOLUNTEERS,
    draw_votes,
    true_probabilities,
)

__all__ = [
    "SimulateConfig",
    "SimulationResult",
    "simulate_survey",
    "Galaxy",
    "Companion",
    "sample_galaxy",
    "render_galaxy",
    "flux_to_rgb",
    "true_probabilities",
    "draw_votes",
    "iau_name",
    "BANDS",
    "CATALOG",
    "RECORD",
    "SCHEMAS",
    "IMAGE_FORMATS",
    "ENDS_CLASSIFICATION",
    "MIN_VOLUNTEERS",
]
