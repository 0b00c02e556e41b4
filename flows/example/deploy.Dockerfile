# The image of the example deployment (prefect.yaml): Prefect's image plus the flow, laid
# out as in the repository, so the entrypoint flows/example/hello.py:hello resolves both
# where `prefect deploy` runs (the repository root) and in the container (working
# directory /opt/prefect, set by the deployment's pull step).
FROM prefecthq/prefect:3.8.8-python3.11
COPY hello.py /opt/prefect/flows/example/hello.py
WORKDIR /opt/prefect
