"""troupe through the Function Compute SDKs: `python -m infra.fc` (see __main__.py).

config.py   settings from the environment (AccessKey, endpoint), s.yaml function names
client.py   InvokeFunction through alibabacloud-fc20230330 (fc3), alibabacloud-fc-open20210406
            (fc-open) or aliyun-fc2 (fc2)
redrive.py  re-driving dead letters kept in a store (OSS), through an async invoker
"""
