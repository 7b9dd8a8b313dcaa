"""calgrpo: GRPO for language models with credit-assignment oracles (CAL-GRPO), taught in notebooks.

Where each concept lives, by layer, lowest first (a module imports from its own layer or lower ones, never from a
higher one; ``tests/test_layers.py`` checks it and the README's layout table states the same map):

- **world**, the problems and the policy: :mod:`.validation` (argument checks), :mod:`.tasks` (the synthetic task),
  :mod:`.arithmetic` (a GSM8K calculation line written, parsed and evaluated; a mistake injected and propagated),
  :mod:`.claims` (arithmetic claims in free text), :mod:`.grounding` (the numbers a solution may use),
  :mod:`.data` (GSM8K files), :mod:`.rewards` (answers, formats, prompts), :mod:`.steps` (a solution's numbered
  steps), :mod:`.tokenizers_zoo` (tokenizer families), :mod:`.policy` (loading a model), :mod:`.sampling`
  (generating from it, scoring it), :mod:`.sft_data` and :mod:`.policy_build` (the tiny policy's data and build),
  :mod:`.lora` (adapters), :mod:`.rehearsal` (small models shaped like hub models), :mod:`.reward_model` (outcome
  reward models, their calibration), :mod:`.reward_model_eval` and :mod:`.reward_model_build` (the tiny RM's
  metrics and build), :mod:`.hybrid_rewards` (verifier and RM rewards together, difficulty weights);
- **math**, pure functions on tensors: :mod:`.advantages` (group advantages), :mod:`.credit` (token advantages of
  each credit mode), :mod:`.loss` (clipped surrogate, KL, aggregations);
- **spans**: :mod:`.quotes` (an oracle's quote -> characters) and :mod:`.spans` (characters -> token masks);
- **oracle**: :mod:`.oracle`, the credit-assignment oracle (its docstring maps its modules);
- **loop**: :mod:`.config` (GRPOConfig, presets), :mod:`.rollout`, :mod:`.checkpoints`, :mod:`.scoring` (a step's
  rewards and advantages), :mod:`.trainer` (one public method per phase of a step), :mod:`.metrics_log`;
- **face**: :mod:`.cli`, :mod:`.experiment`, :mod:`.viz` (token pictures), :mod:`.advantage_plots`,
  :mod:`.curves` (training and experiment curves), :mod:`.tables`, :mod:`.exercises`, :mod:`.notebook`,
  :mod:`.reward_plots` (reward-model pictures).

Importing the package imports nothing else; import the module you need.
"""
