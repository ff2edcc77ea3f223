"""The export in the RAG frameworks' own sentence-transformers wrappers (the real libraries, no mocks).

For each wrapper, the settings README "Deploy" documents give the adapted query vector for questions and the
plain document vector for documents (within 1e-5 of what the pipeline computes), and a store or retriever of
that framework ranks with them; used without those settings, the export fails loudly instead of handing out
the unadapted vector (a Router with no default route: issue 29).

How each wrapper calls sentence-transformers (read from their installed source):
- LangChain `HuggingFaceEmbeddings`: `encode(texts, **encode_kwargs)` for documents and
  `encode(texts, **query_encode_kwargs)` for queries: `task` passes through.
- Haystack `SentenceTransformers{Text,Document}Embedder`: `encode(texts, **encode_kwargs)`: `task` passes through.
- LlamaIndex `HuggingFaceEmbedding`: `encode(texts, prompt_name="query"|"text")`, no way to pass a task:
  questions through `<export>/query`, documents through the base model.
- Chroma `SentenceTransformerEmbeddingFunction`: `encode(texts)` for both, `embed_query` = `__call__`:
  the same split as LlamaIndex.
"""

from __future__ import annotations

import numpy as np
import pytest
from export_support import CHUNKS, QUESTIONS, assert_vectors, build_export

pytestmark = pytest.mark.slow
NO_ROUTE = "Could not determine route for task=None"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_export(tmp_path_factory.mktemp("deploy"))


@pytest.fixture(autouse=True)
def no_telemetry(monkeypatch):
    """Haystack and Chroma send usage telemetry by default; nothing here may reach outside."""
    monkeypatch.setenv("HAYSTACK_TELEMETRY_ENABLED", "False")
    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "False")


def nearest(query_vectors, document_vectors) -> list[int]:
    """The index of each question's nearest document by cosine (the vectors are unit length)."""
    return np.argmax(np.asarray(query_vectors) @ np.asarray(document_vectors).T, axis=1).tolist()


def test_plain_encode_of_the_export_fails_and_says_what_to_call(built):
    """The most common hand-written call, `model.encode(question)`, and a prompt name alone: an error naming
    the tasks, never the document vector."""
    from ragtune.adapter.export import load_exported

    model = load_exported(built.path)
    for call in (lambda: model.encode(QUESTIONS[0]), lambda: model.encode(QUESTIONS, prompt_name="query")):
        with pytest.raises(ValueError, match=NO_ROUTE) as error:
            call()
        assert "task='query'" in str(error.value) and "task='document'" in str(error.value)
    assert_vectors(model.encode(QUESTIONS, task="query"), built.query_vectors(QUESTIONS), "task='query'")
    assert_vectors(model.encode(CHUNKS, task="document"), built.document_vectors(CHUNKS), "task='document'")


def test_langchain_huggingface_embeddings(built):
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_huggingface import HuggingFaceEmbeddings

    embeddings = HuggingFaceEmbeddings(
        model_name=str(built.path),
        model_kwargs={"trust_remote_code": True, "device": "cpu"},
        encode_kwargs={"task": "document"},
        query_encode_kwargs={"task": "query"},
    )
    assert_vectors(embeddings.embed_query(QUESTIONS[0]), built.query_vectors(QUESTIONS[:1]), "embed_query")
    # LangChain turns newlines into spaces; the WordPiece tokenizer splits on both alike.
    assert_vectors(embeddings.embed_documents(CHUNKS), built.document_vectors(CHUNKS), "embed_documents")

    store = InMemoryVectorStore.from_texts(CHUNKS, embeddings)
    want = nearest(built.query_vectors(QUESTIONS), built.document_vectors(CHUNKS))
    assert [CHUNKS.index(store.similarity_search(q, k=1)[0].page_content) for q in QUESTIONS] == want

    plain = HuggingFaceEmbeddings(model_name=str(built.path), model_kwargs={"trust_remote_code": True})
    with pytest.raises(ValueError, match=NO_ROUTE):
        plain.embed_query(QUESTIONS[0])


def test_haystack_sentence_transformers_embedders(built):
    from haystack import Document, Pipeline
    from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack_integrations.components.embedders.sentence_transformers import (
        SentenceTransformersDocumentEmbedder,
        SentenceTransformersTextEmbedder,
    )

    common = {"model": str(built.path), "trust_remote_code": True, "local_files_only": True, "progress_bar": False}
    document_embedder = SentenceTransformersDocumentEmbedder(**common, encode_kwargs={"task": "document"})
    text_embedder = SentenceTransformersTextEmbedder(**common, encode_kwargs={"task": "query"})
    documents = document_embedder.run([Document(content=c) for c in CHUNKS])["documents"]
    assert_vectors([d.embedding for d in documents], built.document_vectors(CHUNKS), "document embedder")
    assert_vectors(text_embedder.run(QUESTIONS[0])["embedding"], built.query_vectors(QUESTIONS[:1]), "text embedder")

    store = InMemoryDocumentStore(embedding_similarity_function="cosine")
    store.write_documents(documents)
    pipeline = Pipeline()
    pipeline.add_component("embed", text_embedder)
    pipeline.add_component("retrieve", InMemoryEmbeddingRetriever(store, top_k=1))
    pipeline.connect("embed.embedding", "retrieve.query_embedding")
    want = nearest(built.query_vectors(QUESTIONS), built.document_vectors(CHUNKS))
    got = [pipeline.run({"embed": {"text": q}})["retrieve"]["documents"][0].content for q in QUESTIONS]
    assert [CHUNKS.index(c) for c in got] == want

    plain = SentenceTransformersTextEmbedder(**common)
    with pytest.raises(ValueError, match=NO_ROUTE):
        plain.run(QUESTIONS[0])


def test_llamaindex_huggingface_embedding(built):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    query_embed = HuggingFaceEmbedding(model_name=f"{built.path}/query", trust_remote_code=True, device="cpu")
    document_embed = HuggingFaceEmbedding(model_name=built.document_model, device="cpu")
    assert_vectors(query_embed.get_query_embedding(QUESTIONS[0]), built.query_vectors(QUESTIONS[:1]), "query")
    assert_vectors(document_embed.get_text_embedding_batch(CHUNKS), built.document_vectors(CHUNKS), "documents")

    nodes = [TextNode(text=c, id_=f"c{i}") for i, c in enumerate(CHUNKS)]
    index = VectorStoreIndex(nodes, embed_model=document_embed)
    retriever = index.as_retriever(embed_model=query_embed, similarity_top_k=1)
    want = nearest(built.query_vectors(QUESTIONS), built.document_vectors(CHUNKS))
    assert [CHUNKS.index(retriever.retrieve(q)[0].node.get_content()) for q in QUESTIONS] == want
    # The vectors the index stored are the plain document vectors.
    stored = [index.vector_store.get(f"c{i}") for i in range(len(CHUNKS))]
    assert_vectors(stored, built.document_vectors(CHUNKS), "stored node embeddings")


def test_chroma_sentence_transformer_embedding_function(built):
    import chromadb
    from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction

    query_ef = SentenceTransformerEmbeddingFunction(model_name=f"{built.path}/query", trust_remote_code=True)
    document_ef = SentenceTransformerEmbeddingFunction(model_name=built.document_model)
    assert_vectors(query_ef(QUESTIONS), built.query_vectors(QUESTIONS), "query function")
    assert_vectors(document_ef(CHUNKS), built.document_vectors(CHUNKS), "document function")

    client = chromadb.EphemeralClient()
    collection = client.create_collection(
        "integration-chunks", embedding_function=document_ef, configuration={"hnsw": {"space": "cosine"}}
    )
    collection.add(ids=[f"c{i}" for i in range(len(CHUNKS))], documents=CHUNKS)
    stored = collection.get(ids=[f"c{i}" for i in range(len(CHUNKS))], include=["embeddings"])["embeddings"]
    assert_vectors(stored, built.document_vectors(CHUNKS), "stored document embeddings")
    hits = collection.query(query_embeddings=query_ef(QUESTIONS), n_results=1)
    want = nearest(built.query_vectors(QUESTIONS), built.document_vectors(CHUNKS))
    assert [int(ids[0][1:]) for ids in hits["ids"]] == want

    plain = SentenceTransformerEmbeddingFunction(model_name=str(built.path), trust_remote_code=True)
    with pytest.raises(ValueError, match=NO_ROUTE):
        plain(QUESTIONS)
