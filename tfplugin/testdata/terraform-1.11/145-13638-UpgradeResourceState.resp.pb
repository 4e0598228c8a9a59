
´
±‡¢idÙ5/tmp/kvmbe-bed-13076-0/pool/seed.iso;8de849882d148994¤name¨seed.iso¤pool£bed©user_data®#cloud-config
©meta_dataÀ®network_configÀ¤pathÙ$/tmp/kvmbe-bed-13076-0/pool/seed.iso