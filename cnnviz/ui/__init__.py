"""The only Streamlit helpers, one room per job: models (cached loaders, "Your model"), inputs (pickers), links (URL
state), walk (slider + Play), session (per-session caches, expiry), projector (text size), training (this session's
job). Pages use them as ``from cnnviz import ui`` then ``ui.name``; a test that patches one patches its room."""

from cnnviz.ui.inputs import (
    PickedInput,
    canvas_input,
    mistake_input,
    sample_input,
    teaching_sample,
    test_set,
    upload_input,
)
from cnnviz.ui.links import BadLinkValue, index_in, link_button, one_of, sample_index_parser, seed_from_url, write_url
from cnnviz.ui.models import (
    YourModel,
    add_uploaded_model,
    default_learn_rate,
    digit_sum_predictions,
    digit_sum_test_set,
    examples_for,
    examples_of,
    get_model,
    model_identity,
    your_model,
)
from cnnviz.ui.projector import LABEL_CSS, PROJECTOR_CSS, projector, projector_toggle, text_px
from cnnviz.ui.session import digest, expire_closed_sessions, session_alive, session_cached, session_id
from cnnviz.ui.training import session_model, start_training, training_job
from cnnviz.ui.walk import PLAY_SPEEDS, play_interval, show_code, stepper

__all__ = [
    "LABEL_CSS", "PLAY_SPEEDS", "PROJECTOR_CSS", "BadLinkValue", "PickedInput", "YourModel", "add_uploaded_model",
    "canvas_input", "default_learn_rate", "digest", "digit_sum_predictions", "digit_sum_test_set", "examples_for",
    "examples_of", "expire_closed_sessions", "get_model", "index_in", "link_button", "mistake_input", "model_identity",
    "one_of", "play_interval", "projector", "projector_toggle", "sample_index_parser", "sample_input", "seed_from_url",
    "session_alive", "session_cached", "session_id", "session_model", "show_code", "start_training", "stepper",
    "teaching_sample", "test_set", "text_px", "training_job", "upload_input", "write_url", "your_model",
]
