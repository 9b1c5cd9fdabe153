#!/usr/bin/env bash
# Goals (a)-(c) of issue 15 as docs/your-own-survey.md and docs/volunteers.md give them, on a small simulated survey.
set -euxo pipefail
cd /work/goals/snap
export PATH=$PWD/.venv/bin:$PATH MLFLOW_TRACKING_URI=sqlite:////work/goals/mlflow.db
W=/work/goals/w; rm -rf $W; mkdir -p $W
zoobot simulate --n-galaxies 400 --image-size 64 --output-dir $W/sim --seed 3
python - <<'PY'
import pandas as pd
c = pd.read_csv("/work/goals/w/sim/catalog.csv")
c.iloc[:250].to_csv("/work/goals/w/sim/labelled.csv", index=False)
u = c.iloc[250:].drop(columns=[k for k in c.columns if k.startswith(("smooth-or-featured", "disk-edge-on", "has-spiral", "bar_", "bulge-size", "how-rounded", "edge-on-bulge", "spiral-", "merging"))])
u.to_csv("/work/goals/w/sim/unclassified.csv", index=False)
PY
# (a)+(b): your own survey, one command (docs/your-own-survey.md section 2), small settings
mlflow run . --env-manager local --experiment-name my-survey -P catalog=$W/sim/labelled.csv \
    -P schema=decals -P image_root=$W/sim -P image_size=64 -P epochs=8 -P work_dir=$W/my_survey
# step by step, with the verdict
zoobot convert --experiment my-survey --catalog $W/sim/labelled.csv --schema decals --image-size 64 \
    --output-dir $W/my_survey/shards2
zoobot train --experiment my-survey --shards $W/my_survey/shards2 --epochs 8 --registered-model-name my-survey
zoobot evaluate --experiment my-survey --model models:/my-survey@champion --shards $W/my_survey/shards2
# (c): a campaign with volunteers (docs/volunteers.md)
zoobot convert --catalog $W/sim/labelled.csv --pool-catalog $W/sim/unclassified.csv --schema decals \
    --image-size 64 --output-dir $W/campaign_shards
zoobot al_iteration --experiment my-campaign --state $W/campaign/state.db --shards $W/campaign_shards \
    --oracle zooniverse --n-acquire 30 --output binomial --question smooth-or-featured --epochs 8
python - <<'PY'
import pandas as pd
sent = pd.read_csv("/work/goals/w/campaign/iteration_001/subjects/subjects_iteration_1.csv", dtype={"#id_str": str})
truth = pd.read_csv("/work/goals/w/sim/catalog.csv", dtype={"iauname": str}).set_index("iauname")
from zoobot.core.schema import load_schema
schema = load_schema("decals")
reduced = pd.DataFrame({"subject_id": range(1000, 1000 + len(sent)), "#id_str": sent["#id_str"]})
names = {}
for k, q in enumerate(schema.questions):  # as a reducer names them: the task, then the answer
    for a in q.answers:
        names[f"T{k}.{a.name}"] = a.column
        reduced[f"T{k}.{a.name}"] = truth.loc[sent["#id_str"], a.column].to_numpy()
reduced.to_csv("/work/goals/w/reduced_week1.csv", index=False)
import yaml
open("/work/goals/w/columns.yaml", "w").write(yaml.safe_dump(names, sort_keys=False))
PY
zoobot al_iteration --experiment my-campaign --state $W/campaign/state.db --oracle zooniverse \
    --n-acquire 30 --output binomial --question smooth-or-featured --epochs 8 \
    --labels-file $W/reduced_week1.csv --labels-map $W/columns.yaml
zoobot report --experiment my-campaign --output $W/status.md | tail -20
