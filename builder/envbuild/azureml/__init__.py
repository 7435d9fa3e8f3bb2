"""``envbuild.azureml``: Azure ML SDK v1's training API, run locally by envbuild.

Replace the ``azureml.core`` imports and the seed's code runs unchanged
otherwise (``docs/migrating-from-azureml.md``)::

    from envbuild.azureml import Environment, Experiment, ScriptRunConfig, Workspace

    ws = Workspace.from_config()              # the local Docker engine (said once)
    env = Environment.get(workspace=ws, name="AzureML-PyTorch-1.6-GPU")  # curated/pytorch-1.6-gpu
    src = ScriptRunConfig(source_directory=".", script="train.py", environment=env)
    run = Experiment(workspace=ws, name="demo").submit(src)
    run.wait_for_completion(show_output=True)

Modules: :mod:`.curated` (Azure ML's curated names and their ``curated/``
replacements).

May import: everything below the command line (it is a front end, as
``cli`` is), never click and never the docker SDK. The names are loaded on
first use (PEP 562): importing the package costs nothing.
"""
